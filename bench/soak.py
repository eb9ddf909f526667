"""The soak of issue 9: ``python -m bench.soak [--duration S] [--out DIR]`` (about 15 minutes; not in CI).

Ten minutes of mixed tiers (``bench/soak.yaml``) through a hybrid gateway on
simulator providers, with the scenario's 429 storms and latency spikes and one
Redis restart (SIGTERM, a few seconds down, back on the same port with its
append-only file). It reuses the incident drill's stack, load generator and
timeline, samples the gateway's RSS, and reports:

- accepted jobs and terminal jobs (they must be equal: nothing accepted is lost);
- the interactive success ratio (target >= 99.9%);
- p50/p95 of synchronous answers per tier;
- the RSS trend (first and last minute, and the slope over the second half);
- what the Redis outage cost: requests refused with 503 ``queue_unavailable`` (never accepted).

``--duration`` scales the whole scenario (incidents and restart included), for a quick check.
Results go to ``OUT/soak.json`` and ``OUT/soak.md``; exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from gateway.drill import measure
from gateway.drill.load import Record
from gateway.drill.runner import Target, machine, run_once
from gateway.drill.scenario import Scenario, load, parse
from gateway.drill.stack import ADMIN_KEY, Stack, client_key

SCENARIO = Path(__file__).with_name("soak.yaml")
RESULTS = Path(__file__).with_name("results") / "soak"
RSS_EVERY_S = 5.0


def scaled(sc: Scenario, duration_s: float) -> Scenario:
    """The scenario stretched or squeezed to ``duration_s`` (incident times scale with it)."""
    f = duration_s / sc.duration_s
    raw = sc.model_dump()
    raw["duration_s"] = duration_s
    for inc in raw["incidents"]:
        inc["start_s"], inc["end_s"] = inc["start_s"] * f, inc["end_s"] * f
    return parse(raw)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t seconds, MB) in MB per minute."""
    if len(points) < 3:
        return None
    return statistics.linear_regression([t for t, _ in points], [m for _, m in points]).slope * 60


def rss_trend(points: list[tuple[float, float]], duration_s: float) -> dict[str, Any]:
    first = [m for t, m in points if t < 60]
    last = [m for t, m in points if t >= duration_s - 60]
    second_half = [(t, m) for t, m in points if t >= duration_s / 2]
    slope = slope_per_min(second_half)
    return {"first_minute_mb": round(statistics.median(first), 1) if first else None,
            "last_minute_mb": round(statistics.median(last), 1) if last else None,
            "max_mb": round(max(m for _, m in points), 1) if points else None,
            "second_half_slope_mb_per_min": None if slope is None else round(slope, 3),
            "samples": [[round(t, 1), round(m, 1)] for t, m in points]}


def summarize(records: list[Record], rss: list[tuple[float, float]], sc: Scenario,
              restart: dict[str, float]) -> dict[str, Any]:
    by_tier: dict[str, list[Record]] = {}
    for r in records:
        by_tier.setdefault(r.tier, []).append(r)
    accepted = sum(1 for r in records if r.accepted)
    terminal = sum(1 for r in records if r.accepted and r.terminal)
    tiers = {}
    for tier, rs in by_tier.items():
        lat = measure.sync_latencies(rs)
        ok = sum(1 for r in rs if r.ok)
        tiers[tier] = {"sent": len(rs), "succeeded": ok, "success_ratio": round(ok / len(rs), 6),
                       "accepted": sum(1 for r in rs if r.accepted),
                       "sync_p50_s": _r(measure.percentile(lat, 50)), "sync_p95_s": _r(measure.percentile(lat, 95)),
                       "refused_queue_unavailable": sum(1 for r in rs if r.error == "queue_unavailable"),
                       "errors": measure.errors(rs)}
    inter = tiers.get("interactive", {})
    trend = rss_trend(rss, sc.duration_s)
    targets = [
        {"target": "accepted == terminal (0 lost)", "value": accepted - terminal, "met": accepted == terminal},
        {"target": "interactive success >= 99.9%", "value": inter.get("success_ratio"),
         "met": (inter.get("success_ratio") or 0) >= 0.999},
    ]
    return {"accepted": accepted, "terminal": terminal, "lost": accepted - terminal, "tiers": tiers,
            "rss": trend, "redis_restart": restart, "targets": targets}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


async def _soak(sc: Scenario, stack: Stack, restart_at_s: float, down_s: float) -> tuple[dict[str, Any], list, dict]:
    keys = {c: client_key(c) for c in sc.clients()}
    target = Target("soak", stack.gateway_url, dict(stack.sim_urls), ADMIN_KEY, keys, True)
    pid = stack.procs["gateway"].pid
    rss: list[tuple[float, float]] = []
    restart: dict[str, float] = {}
    t0 = time.monotonic()

    async def sample_rss() -> None:
        while True:
            mb = rss_mb(pid)
            if mb is not None:
                rss.append((time.monotonic() - t0, mb))
            await asyncio.sleep(RSS_EVERY_S)

    async def restart_redis() -> None:
        await asyncio.sleep(max(restart_at_s - (time.monotonic() - t0), 0))
        restart["down_at_s"] = round(time.monotonic() - t0, 2)
        await asyncio.to_thread(stack.restart_redis, down_s)
        restart["up_at_s"] = round(time.monotonic() - t0, 2)

    sampler = asyncio.create_task(sample_rss())
    restarter = asyncio.create_task(restart_redis())
    run = await run_once(sc, target)
    await restarter
    sampler.cancel()
    return run, rss, restart


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = [f"Soak `{result['scenario']}`: {result['duration_s']:g} s of load, {result['machine']}, {result['date']}", "",
             f"- accepted jobs {s['accepted']}, terminal {s['terminal']}, lost {s['lost']}",
             f"- Redis down from t={s['redis_restart'].get('down_at_s')} s to t={s['redis_restart'].get('up_at_s')} s", "",
             "| tier | sent | success | sync p50 | sync p95 | jobs accepted | refused while Redis was down |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for tier, t in s["tiers"].items():
        p50 = "-" if t["sync_p50_s"] is None else f"{t['sync_p50_s'] * 1000:.0f} ms"
        p95 = "-" if t["sync_p95_s"] is None else f"{t['sync_p95_s'] * 1000:.0f} ms"
        lines.append(f"| {tier} | {t['sent']} | {t['success_ratio'] * 100:.2f}% | {p50} | {p95} | {t['accepted']} "
                     f"| {t['refused_queue_unavailable']} |")
    rss = s["rss"]
    lines += ["", f"RSS: {rss['first_minute_mb']} MB in the first minute, {rss['last_minute_mb']} MB in the last, "
                  f"max {rss['max_mb']} MB; second-half slope {rss['second_half_slope_mb_per_min']} MB/min", ""]
    lines += [f"- {'PASS' if t['met'] else 'FAIL'} {t['target']}: {t['value']}" for t in s["targets"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", type=Path, default=SCENARIO)
    parser.add_argument("--duration", type=float, help="seconds of load (scales the scenario; default: as written)")
    parser.add_argument("--redis-restart-at", type=float, default=0.5, help="when Redis restarts, as a share of the run")
    parser.add_argument("--redis-down-s", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sc = load(args.scenario)
    if args.duration:
        sc = scaled(sc, args.duration)
    args.out.mkdir(parents=True, exist_ok=True)
    stack = Stack(sc, "hybrid", args.out / "run", durable_redis=True)
    print(f"soak: {sc.duration_s:g} s of load, logs under {args.out / 'run'}", file=sys.stderr, flush=True)
    try:
        stack.start()
        run, rss, restart = asyncio.run(_soak(sc, stack, sc.duration_s * args.redis_restart_at, args.redis_down_s))
    finally:
        stack.stop()
    fields = {f.name for f in dataclasses.fields(Record)}
    records = [Record(**{k: v for k, v in d.items() if k in fields}) for d in run["records"]]
    result = {"scenario": sc.name, "duration_s": sc.duration_s, "machine": machine(),
              "date": time.strftime("%Y-%m-%d", time.gmtime()), "incidents": run["incidents"],
              "mode_timeline": run["mode_timeline"], "summary": summarize(records, rss, sc, restart)}
    (args.out / "soak.json").write_text(json.dumps(result, indent=1))
    text = markdown(result)
    (args.out / "soak.md").write_text(text)
    print(text)
    return 0 if all(t["met"] for t in result["summary"]["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
