"""A private Prometheus on a free port, and the PromQL helpers the observability tests need.

``PrometheusServer`` runs the Debian ``prometheus`` binary with a temporary
config that scrapes given targets twice a second and loads given rule files.
``metric_names`` lists the metric names a PromQL expression refers to, read
from Prometheus's own formatting of it (``/api/v1/format_query``), so the
tests need no PromQL parser of their own.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.net import free_port

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
MISSING = "prometheus/promtool are not installed (apt-get install prometheus; .ci/run does it)"

# Grafana's variables, as a panel would see them with "All" selected over a short range.
GRAFANA_VARS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m", "__range_s": "300"}

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "by", "without", "on",
                       "ignoring", "group_left", "group_right", "start", "end"})


def grafana_expr(expr: str, variables: dict[str, str] | None = None) -> str:
    """``expr`` with ``$var``/``${var}``/``[[var]]`` replaced: Grafana's builtins, else ``.*`` ("All")."""
    values = {**GRAFANA_VARS, **(variables or {})}

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        return values.get(name, ".*")

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", sub, expr)


def metric_names(formatted: str) -> set[str]:
    """Metric names in an expression as Prometheus formats it (selectors outside strings, not functions)."""
    text = _STRINGS.sub('""', formatted)
    text = _BRACES.sub(" ", text)
    while _BRACKETS.search(text):
        text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    # A selector with only matchers names its metric inside the braces.
    for m in re.finditer(r'__name__\s*=\s*"([^"]+)"', formatted):
        names.add(m.group(1))
    return names


class PrometheusServer:
    def __init__(self, home: Path, targets: Sequence[str], rule_files: Sequence[Path] = (), job: str = "gateway"):
        assert PROMETHEUS, MISSING
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = {
            "global": {"scrape_interval": "500ms", "scrape_timeout": "500ms", "evaluation_interval": "500ms"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = home / "prometheus.log"
        self.http = httpx.Client(base_url=self.url, timeout=10.0)  # one pool: tests make hundreds of queries

    def start(self, timeout: float = 20.0) -> PrometheusServer:
        self.home.mkdir(parents=True, exist_ok=True)
        config_path = self.home / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(self.config))
        assert PROMETHEUS is not None
        cmd = [PROMETHEUS, f"--config.file={config_path}", f"--storage.tsdb.path={self.home / 'data'}",
               f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.home)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.http.get("/-/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"prometheus did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self._log.close()
        self.proc = None
        self.http.close()

    def api(self, path: str, **params: Any) -> Any:
        """GET an ``/api/v1`` endpoint; returns ``data``, or raises with Prometheus's error."""
        response = self.http.get(f"/api/v1/{path}", params=params)
        body = response.json()
        if body.get("status") != "success":
            raise PromQLError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return result

    def format_query(self, expr: str) -> str:
        return str(self.api("format_query", query=expr))

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


class PromQLError(AssertionError):
    pass
