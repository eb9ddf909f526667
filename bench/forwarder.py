"""The reference row of issue 8: a bare Starlette forwarder with a shared aiohttp session.

It does what any proxy must and nothing more: read the body, POST it upstream
on a pooled keep-alive connection, relay status, content type and bytes (SSE
streams chunk by chunk). No auth, no parsing, no metrics, no logs. The
gateway's throughput is judged against this.

Run: ``python -m bench.forwarder --port P --upstream http://127.0.0.1:U``
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from bench.payloads import CHAT_PATH, UPSTREAM_KEY


class Forwarder:
    def __init__(self, upstream: str) -> None:
        self.url = upstream.rstrip("/") + CHAT_PATH
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {UPSTREAM_KEY}"}
        self.session: aiohttp.ClientSession | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))
        try:
            yield
        finally:
            await self.session.close()

    async def chat(self, request: Request) -> Response:
        assert self.session is not None
        body = await request.body()
        resp = await self.session.post(self.url, data=body, headers=self.headers)
        ctype = resp.headers.get("content-type", "application/json")
        if ctype.startswith("text/event-stream"):
            return StreamingResponse(_relay(resp), status_code=resp.status, media_type=ctype)
        try:
            data = await resp.read()
        finally:
            resp.release()
        return Response(data, status_code=resp.status, media_type=ctype)

    async def healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    def app(self) -> Starlette:
        routes = [Route(CHAT_PATH, self.chat, methods=["POST"]), Route("/healthz", self.healthz, methods=["GET"])]
        return Starlette(routes=routes, lifespan=self.lifespan)


async def _relay(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.content.iter_any():
            yield chunk
    finally:
        resp.release()


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="A bare Starlette + aiohttp forwarder (benchmark reference).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream origin, e.g. http://127.0.0.1:9000")
    args = parser.parse_args(argv)
    uvicorn.run(
        Forwarder(args.upstream).app(),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    main()
