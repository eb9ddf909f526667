"""``gateway mode`` and ``gateway status``: the operator's commands against a running gateway.

They speak to the admin API only, exactly as the responder console does, so a
mode set here is authorised, audited and shared like any other.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import httpx

_TTL = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_COLOUR = {"normal": "32", "degraded": "33", "shed": "31", "open": "31", "half_open": "33", "closed": "32"}


def parse_ttl(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h`` or ``1d`` in seconds."""
    m = _TTL.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"not a duration: {text!r} (try 90s, 30m, 2h)")
    return float(m.group(1)) * _UNIT[m.group(2)]


class Console:
    def __init__(self, url: str | None, key: str | None, out: Any = None) -> None:
        self.url = (url or os.environ.get("GATEWAY_URL") or "http://127.0.0.1:8080").rstrip("/")
        self.key = key if key is not None else os.environ.get("GATEWAY_ADMIN_KEY")
        self.out = out or sys.stdout
        self.colour = hasattr(self.out, "isatty") and self.out.isatty() and not os.environ.get("NO_COLOR")

    def _paint(self, text: str) -> str:
        code = _COLOUR.get(text)
        return f"\033[{code}m{text}\033[0m" if self.colour and code else text

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        try:
            resp = httpx.request(method, self.url + path, json=body, headers=headers, timeout=10.0)
        except httpx.HTTPError as exc:
            raise SystemExit(f"gateway: cannot reach {self.url}: {exc}") from None
        data = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
        if resp.status_code >= 400:
            message = (data.get("error") or {}).get("message") or resp.text
            raise SystemExit(f"gateway: {resp.status_code}: {message}")
        return data

    def print(self, line: str = "") -> None:
        print(line, file=self.out)

    def show_modes(self, view: dict[str, Any]) -> None:
        rows = [("SCOPE", "MODE", "SOURCE", "REASON", "ACTOR", "TTL LEFT")]
        for scope, item in view["scopes"].items():
            o = item.get("override") or {}
            ttl = o.get("ttl_remaining_s")
            reason = o.get("reason") if o else item["auto"].get("reason", "")
            rows.append((scope, item["mode"], item["source"], reason or "-", o.get("actor") or "-",
                         f"{ttl:.0f}s" if ttl is not None else "-"))
        self._table(rows, paint_col=1)
        if not view.get("automatic", True):
            self.print("automatic control is off (degradation.enabled: false)")

    def show_status(self, s: dict[str, Any]) -> None:
        c = s["controller"]
        self.print(f"gateway {s['version']}  up {s['uptime_s']:.0f}s  redis {s['redis']}  "
                   f"leader {'yes' if c['leader'] else 'no'}  automatic {'on' if c['automatic'] else 'off'}")
        self.print()
        self.show_modes({"scopes": s["modes"], "automatic": c["automatic"]})
        self.print()
        enter = s["thresholds"]["enter"]
        rows = [("PROVIDER", "SAMPLES", "P95 S", "429 RATIO", "ERROR RATIO", "CIRCUITS")]
        for name, h in s["health"].items():
            w = h.get("window") or h.get("local") or {}
            circuits = ", ".join(f"{k.split('/', 1)[1]}={v}" for k, v in s["circuits"].items() if k.startswith(name + "/"))
            rows.append((name, str(w.get("samples", 0)), _num(w.get("p95_latency_s")),
                         _num(w.get("rate_limited_ratio")), _num(w.get("error_ratio")), circuits or "-"))
        self._table(rows)
        self.print(f"  enter at p95 > {enter['p95_latency_s']}s, 429 ratio > {enter['rate_limited_ratio']}, "
                   f"error ratio > {enter['error_ratio']}")
        self.print()
        rows = [("TIER", "QUEUED", "OLDEST S")]
        for tier, q in (s.get("queue") or {}).items():
            if isinstance(q, dict):
                rows.append((tier, str(q["depth"]), _num(q["oldest_age_s"])))
        self._table(rows)
        if s.get("dead_letters"):
            self.print(f"  dead letters: {s['dead_letters']}")
        self.print()
        rows = [("PROVIDER", "TIER", "IN FLIGHT", "RESERVED", "CAPACITY")]
        for name, a in s["admission"].items():
            for tier, n in a["inflight"].items():
                rows.append((name, tier, str(n), str(a["reserved"].get(tier, 0)), str(a["capacity"])))
        self._table(rows)

    def _table(self, rows: list[tuple[str, ...]], paint_col: int | None = None) -> None:
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        for n, row in enumerate(rows):
            cells = []
            for i, cell in enumerate(row):
                text = str(cell).ljust(widths[i])
                if n and i == paint_col:
                    text = self._paint(str(cell)) + " " * (widths[i] - len(str(cell)))
                cells.append(text)
            self.print("  ".join(cells).rstrip())


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:.3g}"
