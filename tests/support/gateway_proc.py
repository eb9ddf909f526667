"""A live ``gateway`` process on a free port, started from a config dict."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.net import free_port, wait_http


class GatewayProcess:
    def __init__(
        self,
        tmp: Path,
        config: dict[str, Any] | None,
        *,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        command: str = "serve",
        cwd: Path | None = None,
        launcher: tuple[str, ...] | None = None,
    ) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = tmp / f"gateway-{self.port}.yaml"
            self.config_path.write_text(yaml.safe_dump(config))
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.env.pop("GATEWAY_CONFIG", None)
        self.command = command
        # How to run the CLI: ``python -m gateway`` unless a test wants the installed ``gateway`` script.
        self.launcher = launcher or (sys.executable, "-m", "gateway")
        self.cwd = cwd or tmp
        self.log_path = tmp / f"gateway-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: str = "/healthz") -> GatewayProcess:
        cmd = [*self.launcher, self.command]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        if self.command != "worker":  # a worker serves no HTTP: no port, and nothing to poll
            cmd += ["--port", str(self.port)]
        cmd += list(self.args)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT)
        if self.command == "worker":
            return self  # tests wait on what the worker does (jobs completing), not on a probe
        try:
            wait_http(self.url + wait, proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"gateway did not start:\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        self._log.close()
        self.proc = None
        return code
