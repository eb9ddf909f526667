"""The processes under test: each on a free port, logging to its own file, stopped by its pid.

``Service`` is one child process and a readiness check. The constructors below
build the ones the harness needs: Redis, the fake upstream, the bare forwarder,
the gateway, and (optionally) the LiteLLM proxy.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

import yaml

REPO = Path(__file__).resolve().parent.parent

Check = Callable[["Service"], bool]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(path: str) -> Check:
    def check(service: Service) -> bool:
        try:
            with urllib.request.urlopen(service.url + path, timeout=1.0) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    return check


def redis_pong(service: Service) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", service.port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class Service:
    """One child process on ``port``; ``start`` returns once ``ready`` says so."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        ready: Check,
        logs: Path,
        env: dict[str, str] | None = None,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.name = name
        self.env = env or {}
        self.start_timeout_s = start_timeout_s
        self.argv = argv
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ready = ready
        self.log_path = logs / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Service:
        # The caller's OTEL_* and GATEWAY_CONFIG must not change what is measured; each service says what it needs.
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "GATEWAY_CONFIG"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env.update(self.env)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.ready(self):
                return self
            time.sleep(0.05)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{self.name} did not become ready on port {self.port}; log tail:\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def rss_bytes(self) -> int:
        """Resident set size of the process, from /proc (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")


def redis(logs: Path) -> Service:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(logs), "--logfile", str(logs / "redis-server.log")]
    return Service("redis", argv, port, redis_pong, logs)


def upstream(logs: Path, first_token_ms: float, chunk_ms: float, chunks: int, name: str = "upstream") -> Service:
    port = free_port()
    argv = [sys.executable, "-m", "bench.upstream", "--port", str(port), "--first-token-ms", str(first_token_ms),
            "--chunk-ms", str(chunk_ms), "--chunks", str(chunks)]
    return Service(name, argv, port, http_ok("/healthz"), logs)


def forwarder(logs: Path, upstream_url: str) -> Service:
    port = free_port()
    argv = [sys.executable, "-m", "bench.forwarder", "--port", str(port), "--upstream", upstream_url]
    return Service("forwarder", argv, port, http_ok("/healthz"), logs)


def gateway(
    logs: Path, name: str, config: dict[str, object], *extra: str, env: dict[str, str] | None = None
) -> Service:
    """``gateway serve`` from a config dict; stdout and stderr (the access log) go to ``logs/NAME.log``."""
    port = free_port()
    path = logs / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", str(port), *extra]
    return Service(name, argv, port, http_ok("/readyz"), logs, env)


def litellm(logs: Path, config: dict[str, object]) -> Service:
    port = free_port()
    path = logs / "litellm.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [sys.executable, "-m", "litellm.proxy.proxy_cli", "--config", str(path), "--port", str(port),
            "--host", "127.0.0.1", "--num_workers", "1"]
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # no fetch from the internet at start-up
    # LiteLLM's proxy imports for a long time: about a minute on a busy 2-core machine.
    return Service("litellm", argv, port, http_ok("/health/liveliness"), logs, env, start_timeout_s=240.0)
