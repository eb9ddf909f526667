"""Redis for the embedded default: use the configured one, or start a private one.

When nothing answers at the configured URL and ``redis-server`` is on PATH, the
gateway starts its own, with AOF persistence, listening on a unix socket under
``./.gateway/`` (no port to collide with). A second gateway in the same folder
finds the socket and shares that server rather than starting another.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.config import DEFAULT_REDIS_URL

log = logging.getLogger("gateway.redis")


async def answers(url: str, timeout: float = 1.0) -> bool:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


class PrivateRedis:
    """A ``redis-server`` child process owned by this gateway."""

    def __init__(self, home: Path) -> None:
        self.home = home.resolve()
        self.socket = self.home / "redis.sock"
        self.url = f"unix://{self.socket}"
        self._proc: subprocess.Popen[bytes] | None = None

    async def start(self, wait_s: float = 10.0) -> None:
        if self.socket.exists() and await answers(self.url):
            log.info("sharing the private redis-server already running in %s", self.home)
            return
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH")
        self.home.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        args = [
            binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
            "--dir", str(self.home), "--appendonly", "yes", "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction", "--save", "", "--logfile", str(self.home / "redis.log"),
        ]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while loop.time() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at once; see {self.home / 'redis.log'}")
            if self.socket.exists() and await answers(self.url, 0.5):
                log.warning("started a private redis-server (AOF on) at %s", self.url)
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer within {wait_s}s; see {self.home / 'redis.log'}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None


async def resolve(url: str, policy: str, home: Path) -> tuple[str, PrivateRedis | None]:
    """The Redis URL to use, and the private server if one had to be started.

    An explicitly configured URL is never swapped for a private server under
    ``auto``: the operator chose that Redis, and the gateway waits for it
    (``/readyz`` says so) rather than quietly keeping jobs elsewhere.
    """
    if policy == "never" or (policy == "auto" and url != DEFAULT_REDIS_URL):
        return url, None
    if policy == "auto" and await answers(url):
        return url, None
    if shutil.which("redis-server") is None:
        raise SystemExit(
            f"gateway: no Redis answers at {url}, and redis-server is not installed. "
            "Install it (apt-get install redis-server) or set REDIS_URL / redis.url to a running Redis."
        )
    private = PrivateRedis(home)
    await private.start()
    return private.url, private
