"""The drill's stack: a private redis-server, one simulator per provider, and a gateway, on free ports.

``gateway_config`` is a pure function building the gateway's config for a run:
``hybrid`` uses the scenario's tiers, queue and degradation as given, with
provider batches where a provider offers them; ``plain`` is the same gateway as
a plain proxy (every tier synchronous, no automatic downgrade, no provider
batches), so both runs see the same traffic, fallback order and prices.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.drill.scenario import Scenario

ADMIN_KEY = "sk-drill-admin"
SYNC_ONLY = {"deferrable": False, "async": False, "provider_batch": False, "hold_s": 0}


class StackError(RuntimeError):
    """A process of the stack did not start; the message says which and where its log is."""


def client_key(client: str) -> str:
    return f"sk-drill-{client}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_config(sc: Scenario, mode: str, sim_urls: dict[str, str], redis_url: str, home: Path) -> dict[str, Any]:
    """The gateway config of one run; ``mode`` is ``hybrid`` or ``plain``."""
    if mode not in ("hybrid", "plain"):
        raise ValueError(f"unknown run mode {mode!r}")
    hybrid = mode == "hybrid"
    providers = {
        p.name: {"kind": "openai", "base_url": sim_urls[p.name], "api_key": "sk-sim", "max_concurrency": p.max_concurrency,
                 "batch": hybrid and p.batch}
        for p in sc.providers
    }
    tiers = {name: dict(t) if hybrid else {**t, **SYNC_ONLY} for name, t in sc.tiers.items()}
    clients = [{"name": c, "key": client_key(c), "tiers": tiers_, "default_tier": tiers_[0]}
               for c, tiers_ in sc.clients().items()]
    m = sc.model
    return {
        "server": {"log_level": "warning", "access_log": False, "shutdown_grace_s": 5},
        "redis": {"url": redis_url, "private": "never"},
        "auth": {"admin_keys": [{"name": "drill", "key": ADMIN_KEY}], "clients": clients},
        "providers": providers,
        "models": {m.name: {"targets": [{"provider": p.name, "model": f"{p.name}-{m.name}"} for p in sc.providers],
                            "pricing": {"input_per_mtok": m.input_per_mtok, "output_per_mtok": m.output_per_mtok,
                                        "batch_discount": m.batch_discount}}},
        "tiers": tiers,
        "queue": dict(sc.queue),
        "degradation": {**sc.degradation, "enabled": hybrid and sc.degradation.get("enabled", True)},
        "files": {"dir": str(home / "files")},
    }


@dataclass
class Stack:
    """The processes of one run. ``start`` brings them all up in parallel; ``stop`` ends them."""

    scenario: Scenario
    mode: str
    home: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    sim_urls: dict[str, str] = field(default_factory=dict)  # provider -> simulator root (no /v1)
    gateway_url: str = ""
    durable_redis: bool = False  # append-only file on, so a restarted Redis comes back with its queue (the soak)
    redis_port: int = 0
    _redis_argv: list[str] = field(default_factory=list)

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it until it exits
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.home,
                                            start_new_session=True)
        log.close()

    def start(self) -> Stack:
        self.home.mkdir(parents=True, exist_ok=True)
        redis_bin = shutil.which("redis-server")
        if redis_bin is None:
            raise StackError("redis-server is not on PATH (apt-get install redis-server)")
        self.redis_port = redis_port = free_port()
        self._redis_argv = [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(self.home),
                            "--save", "", "--appendonly", "yes" if self.durable_redis else "no",
                            "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"]
        self._spawn("redis", self._redis_argv)
        out_tokens = max(t.max_tokens for t in self.scenario.traffic)
        for i, p in enumerate(self.scenario.providers):
            port = free_port()
            self.sim_urls[p.name] = f"http://127.0.0.1:{port}"
            self._spawn(f"sim-{p.name}", [
                sys.executable, "-m", "gateway", "simulator", "--port", str(port), "--latency-ms", str(p.latency_ms),
                "--jitter-ms", str(p.jitter_ms), "--output-tokens", str(out_tokens),
                "--seed", str(self.scenario.seed * 100 + i),
            ])
        cfg = gateway_config(self.scenario, self.mode, {n: u + "/v1" for n, u in self.sim_urls.items()},
                             f"redis://127.0.0.1:{redis_port}/0", self.home)
        cfg_path = self.home / "gateway.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self._wait_redis(redis_port)
        port = free_port()
        self.gateway_url = f"http://127.0.0.1:{port}"
        self._spawn("gateway", [sys.executable, "-m", "gateway", "serve", "--config", str(cfg_path), "--port", str(port)])
        for p in self.scenario.providers:
            self._wait_http(f"sim-{p.name}", self.sim_urls[p.name] + "/_sim/behaviour")
            behaviour = {"batch_latency_ms": p.batch_latency_ms}
            httpx.put(self.sim_urls[p.name] + "/_sim/behaviour", json=behaviour, timeout=5).raise_for_status()
        self._wait_http("gateway", self.gateway_url + "/readyz", want=200)
        return self

    def restart_redis(self, down_s: float) -> None:
        """Stop Redis (SIGTERM: it writes its append-only file), leave it down ``down_s``, start it on the same port."""
        proc = self.procs["redis"]
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        time.sleep(down_s)
        self._spawn("redis", self._redis_argv)
        self._wait_redis(self.redis_port, timeout=60.0)

    def _check_alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            tail = (self.home / f"{name}.log").read_text(errors="replace")[-1500:]
            raise StackError(f"{name} exited with {proc.returncode}; log {self.home / (name + '.log')}:\n{tail}")

    def _wait_redis(self, port: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive("redis")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise StackError("redis-server did not answer within 10 s")

    def _wait_http(self, name: str, url: str, want: int | None = None, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive(name)
            try:
                status = httpx.get(url, timeout=1.0).status_code
                if (want is None and status < 500) or status == want:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise StackError(f"{name} did not answer at {url} within {timeout:g} s (log: {self.home / (name + '.log')})")

    def stop(self) -> None:
        """SIGTERM every process (the gateway first, so it can finish in flight work), then SIGKILL stragglers."""
        order = ["gateway"] + [n for n in self.procs if n.startswith("sim-")] + ["redis"]
        for name in order:
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()
