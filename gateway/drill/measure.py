"""Measurements of a drill run: pure functions of the request records, metrics text and audit log.

Sync latency is the time to the answer of requests served synchronously (not
made into jobs), split by send time into calm and incident. Spend is computed
per request from the usage the gateway returned, at batch price when the job
went ``via: provider_batch``, so it can be split by tier; the gateway's own
``gateway_cost_usd_total`` is reported next to it as a cross-check.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gateway.drill.load import Record
from gateway.drill.scenario import ModelSpec


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), linear between closest ranks; None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0-100")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def in_window(t: float, window: tuple[float, float] | None) -> bool:
    return window is not None and window[0] <= t < window[1]


def split(records: Iterable[Record], window: tuple[float, float] | None) -> tuple[list[Record], list[Record]]:
    """(calm, incident) by the time each request was sent."""
    calm, incident = [], []
    for r in records:
        (incident if in_window(r.t, window) else calm).append(r)
    return calm, incident


def sync_latencies(records: Iterable[Record]) -> list[float]:
    """Latencies of answers given synchronously (jobs excluded; errors included: the caller waited for them)."""
    return [r.latency_s for r in records if not r.deferred and r.status is not None and r.latency_s is not None]


def lost(records: Iterable[Record]) -> int:
    """Accepted jobs that never reached a terminal state."""
    return sum(1 for r in records if r.accepted and not r.terminal)


def spend_usd(r: Record, price: ModelSpec) -> float:
    if not r.ok:
        return 0.0
    usd = (r.prompt_tokens * price.input_per_mtok + r.completion_tokens * price.output_per_mtok) / 1e6
    return usd * (1 - price.batch_discount) if r.via == "provider_batch" else usd


def _pcts(values: list[float]) -> dict[str, float | None]:
    return {f"p{q}": _r(percentile(values, q)) for q in (50, 95, 99)}


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


def errors(records: Iterable[Record]) -> dict[str, int]:
    """Failed requests by error code (or HTTP status when the answer had none)."""
    out: dict[str, int] = {}
    for r in records:
        if not r.ok:
            key = r.error or f"HTTP {r.status}"
            out[key] = out.get(key, 0) + 1
    return out


def tier_summary(records: list[Record], window: tuple[float, float] | None, price: ModelSpec) -> dict[str, Any]:
    calm, incident = split(records, window)
    sent = len(records)
    ok = sum(1 for r in records if r.ok)
    accepted = [r for r in records if r.accepted]
    terminal = sum(1 for r in accepted if r.terminal)
    succeeded_jobs = sum(1 for r in accepted if r.job_status == "succeeded")
    ttc = [r.done_t - r.t for r in accepted if r.terminal and r.done_t is not None]
    spend = sum(spend_usd(r, price) for r in records)
    batch_spend = sum(spend_usd(r, price) for r in records if r.via == "provider_batch")
    calm_lat, inc_lat = sync_latencies(calm), sync_latencies(incident)
    p95_calm, p95_inc = percentile(calm_lat, 95), percentile(inc_lat, 95)
    return {
        "sent": sent,
        "succeeded": ok,
        "failed": sent - ok,
        "success_ratio": _r(ok / sent if sent else None, 6),
        "sync": {"count": len(sync_latencies(records)), "calm": {"count": len(calm_lat), **_pcts(calm_lat)},
                 "incident": {"count": len(inc_lat), **_pcts(inc_lat)},
                 "p95_incident_over_calm": _r(p95_inc / p95_calm if p95_calm and p95_inc is not None else None, 3)},
        "deferred": len(accepted),
        "async_requested": sum(1 for r in records if r.is_async),
        "accepted": len(accepted),
        "terminal": terminal,
        "lost": len(accepted) - terminal,
        "jobs_succeeded": succeeded_jobs,
        "completion_ratio": _r(succeeded_jobs / len(accepted) if accepted else None, 6),
        "time_to_completion_s": {**_pcts(ttc), "max": _r(max(ttc) if ttc else None)},
        "via": _count(r.via for r in accepted if r.via),
        "spend_usd": round(spend, 8),
        "spend_batch_usd": round(batch_spend, 8),
        "spend_realtime_usd": round(spend - batch_spend, 8),
        "cost_per_success_usd": _r(spend / ok if ok else None, 10),
        "errors": errors(records),
    }


def _count(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


def metric_spend(metrics_text: str) -> dict[str, float]:
    """``gateway_cost_usd_total`` summed by its ``pricing`` label (realtime, batch)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "gateway_cost_usd":
            continue
        for s in family.samples:
            if s.name == "gateway_cost_usd_total":
                key = s.labels.get("pricing", "")
                out[key] = round(out.get(key, 0.0) + s.value, 8)
    return out


def mode_timeline(audit: list[dict[str, Any]], t0_epoch: float) -> list[dict[str, Any]]:
    """Mode transitions in time order, with times relative to the start of the load."""
    rows = [a for a in audit if "to" in a and "from" in a]
    rows.sort(key=lambda a: a["time"])
    return [{"t": round(a["time"] - t0_epoch, 2), "scope": a["scope"], "from": a["from"], "to": a["to"],
             "source": a.get("source"), "actor": a.get("actor"), "reason": a.get("reason", "")} for a in rows]


def mode_bands(timeline: list[dict[str, Any]], end_t: float) -> list[dict[str, Any]]:
    """Intervals in which a scope was not ``normal``: [{scope, mode, start, end}]."""
    bands: list[dict[str, Any]] = []
    open_: dict[str, dict[str, Any]] = {}
    for tr in timeline:
        scope = tr["scope"]
        if scope in open_:
            band = open_.pop(scope)
            band["end"] = tr["t"]
            bands.append(band)
        if tr["to"] != "normal":
            open_[scope] = {"scope": scope, "mode": tr["to"], "start": tr["t"], "end": None}
    for band in open_.values():
        band["end"] = max(end_t, band["start"])
        bands.append(band)
    return sorted(bands, key=lambda b: b["start"])


def run_summary(records: list[Record], window: tuple[float, float] | None, price: ModelSpec) -> dict[str, Any]:
    """Per tier, and all tiers together."""
    tiers: dict[str, list[Record]] = {}
    for r in records:
        tiers.setdefault(r.tier, []).append(r)
    return {"tiers": {t: tier_summary(rs, window, price) for t, rs in tiers.items()},
            "all": tier_summary(records, window, price)}


def targets(hybrid: dict[str, Any], plain: dict[str, Any] | None, deferrable: list[str]) -> list[dict[str, Any]]:
    """The incident drill's acceptance targets (issue 10), checked on the hybrid run."""
    out: list[dict[str, Any]] = []
    inter = hybrid["tiers"].get("interactive")
    if inter:
        ratio = inter["sync"]["p95_incident_over_calm"]
        out.append({"target": "interactive p95 during the incident <= 1.5x calm", "value": ratio,
                    "met": ratio is not None and ratio <= 1.5})
        out.append({"target": "interactive success >= 99.9%", "value": inter["success_ratio"],
                    "met": inter["success_ratio"] is not None and inter["success_ratio"] >= 0.999})
    sent = sum(hybrid["tiers"][t]["sent"] for t in deferrable if t in hybrid["tiers"])
    done = sum(hybrid["tiers"][t]["succeeded"] for t in deferrable if t in hybrid["tiers"])
    out.append({"target": "deferrable work 100% completed", "value": _r(done / sent if sent else None, 6),
                "met": sent > 0 and done == sent})
    out.append({"target": "0 lost", "value": hybrid["all"]["lost"], "met": hybrid["all"]["lost"] == 0})
    bg_h = hybrid["tiers"].get("background")
    bg_p = (plain or {}).get("tiers", {}).get("background")
    if bg_h and bg_p and bg_p["spend_usd"]:
        ratio = bg_h["spend_usd"] / bg_p["spend_usd"]
        out.append({"target": "background spend <= 55% of the plain proxy's", "value": round(ratio, 4),
                    "met": ratio <= 0.55})
    return out
