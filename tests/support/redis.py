"""A private redis-server on a free port, in a temporary folder."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from tests.support.net import free_port


class RedisServer:
    def __init__(self, home: Path, appendonly: bool = False) -> None:
        self.home = home
        self.appendonly = appendonly
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (apt-get install redis-server)"
        self.home.mkdir(parents=True, exist_ok=True)
        args = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.home),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always", "--maxmemory-policy", "noeviction",
            "--logfile", str(self.home / "redis.log"),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    client.close()
                    return self
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self, kill: bool = False) -> None:
        """Stop the server; ``kill`` sends SIGKILL, so nothing is saved on the way out."""
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def restart(self, kill: bool = False) -> RedisServer:
        """Stop and start again on the same port and folder (with AOF, the data comes back)."""
        self.stop(kill=kill)
        return self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)
