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
        http="httptools",
        lifespan=lifespan,
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_keep_alive=30,
        limit_concurrency=max_connections,
        h11_max_incomplete_event_size=64 * 1024,
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
