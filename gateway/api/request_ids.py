"""``X-Request-Id`` on every response: the client's own id when it sent a sane one, else a fresh one.

The OpenAI routes set the header themselves (their access lines need the id);
this ASGI middleware covers every other answer: models, probes, metrics, and the
404/405 and error responses rendered outside a route.
"""

from __future__ import annotations

import secrets
from typing import Any

HEADER = b"x-request-id"
MAX_LEN = 128


def usable(given: str | None) -> bool:
    """Whether a client-sent id may be echoed back (and into logs)."""
    return bool(given) and len(given) <= MAX_LEN and given.isprintable()  # type: ignore[arg-type]


def new_id() -> str:
    return secrets.token_hex(12)


class RequestIds:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for key, value in scope["headers"]:
            if key == HEADER:
                given = value.decode("latin-1")
                break

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers") or []
                if not any(k.lower() == HEADER for k, _ in headers):
                    rid = given if usable(given) else new_id()
                    message = {**message, "headers": [*headers, (HEADER, rid.encode("latin-1"))]}  # type: ignore[union-attr]
            await send(message)

        await self.app(scope, receive, send_with_id)
