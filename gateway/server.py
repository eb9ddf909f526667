"""Running the ASGI apps on uvicorn (uvloop + httptools), with an optional second admin listener.

uvicorn owns SIGTERM for the main listener: it stops accepting, lets in-flight
requests and streams finish within the grace period, then runs the app's
lifespan shutdown. The admin listener, when ``server.admin_port`` is set, runs
in the same event loop (it shares the gateway's state) and stops with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# The most a request line plus headers may take. httptools itself has no cap, so
# without one a client could make the gateway buffer a header of any size.
MAX_HEAD_BYTES = 64 * 1024
_HEAD_TOO_LARGE = (
    b'{"error":{"message":"The request line and headers exceed %d bytes.","type":"invalid_request_error",'
    b'"param":null,"code":"request_header_fields_too_large"}}' % MAX_HEAD_BYTES
)


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering 431 and closing once a request head passes ``MAX_HEAD_BYTES``.

    Bytes are counted as they arrive (a head that never ends is cut off early)
    and header by header (a large head that arrives in one read is caught too).
    """

    _head_open = True  # between requests and while a head arrives
    _head_bytes = 0  # bytes received while the head was open
    _head_parsed = 0  # request line and header bytes the parser handed over
    _too_large = False

    def data_received(self, data: bytes) -> None:
        if self._head_open:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_open and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._too_large = True
            self.send_400_response("")

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, n: int) -> None:
        self._head_parsed += n
        if self._head_parsed > MAX_HEAD_BYTES:
            self._too_large = True
            raise ValueError("request head too large")  # the parser turns it into an error: see send_400_response

    def send_400_response(self, msg: str) -> None:
        if not self._too_large:
            super().send_400_response(msg)
            return
        head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
        head += b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(_HEAD_TOO_LARGE)
        self.transport.write(head + _HEAD_TOO_LARGE)
        self.transport.close()

    def on_headers_complete(self) -> None:
        self._head_open = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_open, self._head_bytes, self._head_parsed = True, 0, 0


class _Secondary(uvicorn.Server):
    """A listener that leaves signals to the main server and stops when told."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _config(app: Any, host: str, port: int, grace_s: float, lifespan: str, max_connections: int | None) -> uvicorn.Config:
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover - platforms without uvloop
        loop = "asyncio"
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=loop,
        http=BoundedHttpTools,
        lifespan=lifespan,
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_keep_alive=30,
        limit_concurrency=max_connections,
        timeout_graceful_shutdown=int(grace_s) if grace_s else None,
    )


def run(app: Any, host: str, port: int, grace_s: float, *, max_connections: int | None = None,
        admin_app: Any = None, admin_port: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT; exit 1 when the main listener never started."""
    main = uvicorn.Server(_config(app, host, port, grace_s, "on", max_connections))
    if admin_app is None or admin_port is None:
        main.run()
    else:
        admin = _Secondary(_config(admin_app, host, admin_port, grace_s, "off", None))

        async def both() -> None:
            admin_task: asyncio.Task[None] | None = None

            async def start_admin_when_ready() -> None:
                nonlocal admin_task
                while not main.started and not main.should_exit:
                    await asyncio.sleep(0.02)
                if main.started:
                    admin_task = asyncio.create_task(admin.serve())

            starter = asyncio.create_task(start_admin_when_ready())
            try:
                await main.serve()
            finally:
                starter.cancel()
                admin.should_exit = True
                if admin_task is not None:
                    await admin_task

        _event_loop_run(both())
    if not main.started:
        raise SystemExit(1)


def _event_loop_run(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(coro)
        return
    uvloop.run(coro)
