"""The wrk driver: one wrk thread, a generated Lua script for the POST body and headers.

The script's ``done`` hook prints one JSON line with the counts and latency
percentiles, so nothing depends on wrk's human-readable output. There is no ``response``
hook, so wrk skips parsing response headers and bodies in Lua.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.load import LoadResult, LoadSpec

MARK = "BENCH_JSON "

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"errors":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f}\\n',
    "MARK", summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
""".replace("MARK", MARK)


def _lua_string(value: str | bytes) -> str:
    text = value.decode() if isinstance(value, bytes) else value
    if not text.isascii():
        raise ValueError("wrk scripts carry ASCII bodies and headers only")
    return json.dumps(text)  # for ASCII text, a JSON string literal is also a valid Lua string literal


def script(spec: LoadSpec) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(spec.body)}"]
    lines += [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in spec.headers.items()]
    return "\n".join(lines) + "\n" + _DONE


class Wrk:
    name = "wrk"

    def __init__(self, binary: str) -> None:
        self.binary = binary

    @classmethod
    def find(cls) -> Wrk | None:
        binary = shutil.which("wrk")
        return cls(binary) if binary else None

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, check=False)
        return (out.stdout or out.stderr).splitlines()[0].strip()

    def run(self, spec: LoadSpec) -> LoadResult:
        seconds = max(math.ceil(spec.duration_s), 1)  # wrk takes whole seconds only
        with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
            lua = Path(tmp) / "post.lua"
            lua.write_text(script(spec))
            argv = [self.binary, "-t1", f"-c{spec.connections}", f"-d{seconds}s", "--timeout", "10s",
                    "-s", str(lua), spec.url]
            out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
        for line in out.stdout.splitlines():
            if line.startswith(MARK):
                data = json.loads(line[len(MARK):])
                return LoadResult(
                    requests=data["requests"],
                    duration_s=data["duration_us"] / 1e6,
                    p50_ms=data["p50_us"] / 1000,
                    p99_ms=data["p99_us"] / 1000,
                    mean_ms=data["mean_us"] / 1000,
                    errors=data["errors"],
                )
        raise RuntimeError(f"wrk printed no result (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
