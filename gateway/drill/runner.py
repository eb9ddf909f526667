"""``gateway drill``: run a scenario against a hybrid gateway and a plain proxy, then write the report.

By default each run gets its own stack (redis-server, simulators, gateway) on
free ports under ``OUT/runs/<run>/``. With ``--against URL`` the drill drives an
existing gateway whose providers are ``gateway simulator`` processes named with
``--simulator NAME=URL``; that is a single run (the gateway as configured), with
no plain-proxy comparison, since the drill cannot reconfigure someone else's gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from gateway.drill import measure, report
from gateway.drill.load import LoadGenerator
from gateway.drill.sampler import Sampler
from gateway.drill.scenario import Scenario, ScenarioError, load
from gateway.drill.stack import ADMIN_KEY, Stack, StackError, client_key
from gateway.drill.timeline import Timeline, steps

DEFAULT_SCENARIO = "config/scenarios/429-storm.yaml"
SHORT_SCENARIO = "config/scenarios/ci-short.yaml"


@dataclass(frozen=True, slots=True)
class Target:
    """Where one run sends its traffic."""

    name: str  # hybrid | plain | against
    gateway_url: str
    sim_urls: dict[str, str]
    admin_key: str
    keys: dict[str, str]
    allow_async: bool


async def run_once(sc: Scenario, target: Target) -> dict[str, Any]:
    """Drive one run: load, incidents and sampling together, then drain every job; return the raw figures."""
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(180, connect=10)) as client:
        timeline = Timeline(target.sim_urls, client)
        plan = steps(sc.incidents, await timeline.base(), sc.duration_s)
        gen = LoadGenerator(sc, target.gateway_url, client, target.keys, target.allow_async)
        sampler = Sampler(target.gateway_url, target.admin_key, client, sc.sample_s)
        t0, t0_epoch = time.monotonic(), time.time()
        sampling = asyncio.create_task(sampler.run(t0), name="drill-sampler")
        incidents = asyncio.create_task(timeline.play(plan, t0), name="drill-timeline")
        await gen.run(t0)
        await incidents
        load_end = time.monotonic() - t0
        await gen.finish(sc.drain_timeout_s)
        drained = time.monotonic() - t0
        await asyncio.sleep(min(sc.sample_s, 1.0))  # one more sample after the last job
        sampler.stopping = True
        await sampling
        admin = {"Authorization": f"Bearer {target.admin_key}"}
        metrics_text = (await client.get(target.gateway_url + "/metrics")).text
        r = await client.get(target.gateway_url + "/admin/audit", params={"limit": 1000}, headers=admin)
        audit = r.json().get("data", []) if r.status_code == 200 else []
    window = sc.incident_window()
    timeline_rows = measure.mode_timeline([a for a in audit if a.get("time", 0) >= t0_epoch - 1], t0_epoch)
    return {
        "run": target.name,
        "started_at": datetime.fromtimestamp(t0_epoch, timezone.utc).isoformat(timespec="seconds"),
        "load_s": round(load_end, 2),
        "drained_s": round(drained, 2),
        "incidents": timeline.applied,
        "summary": measure.run_summary(gen.records, window, sc.model),
        "metric_spend_usd": measure.metric_spend(metrics_text),
        "mode_timeline": timeline_rows,
        "mode_bands": measure.mode_bands(timeline_rows, drained),
        "samples": sampler.samples,
        "records": [r.as_dict() for r in gen.records],
    }


def _own_stack_run(sc: Scenario, mode: str, home: Path) -> dict[str, Any]:
    stack = Stack(sc, mode, home)
    try:
        stack.start()
        keys = {c: client_key(c) for c in sc.clients()}
        target = Target(mode, stack.gateway_url, dict(stack.sim_urls), ADMIN_KEY, keys, mode == "hybrid")
        return asyncio.run(run_once(sc, target))
    finally:
        stack.stop()


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, rest = v.partition("=")
        if not sep or not name or not rest:
            raise SystemExit(f"gateway drill: {flag} takes NAME=VALUE, not {v!r}")
        out[name] = rest
    return out


def machine() -> str:
    cpus = os.cpu_count() or 0
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {cpus} CPU(s){', ' + model if model else ''}, Python {platform.python_version()}"


def drill(sc: Scenario, out: Path, against: str | None = None, sims: dict[str, str] | None = None,
          admin_key: str | None = None, keys: dict[str, str] | None = None, short: bool = False) -> dict[str, Any]:
    """Run the scenario (both runs, or one against an existing gateway) and write the report to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, Any] = {}
    if against:
        sims = sims or {}
        missing = [p.name for p in sc.providers if p.name not in sims]
        if missing:
            raise SystemExit(f"gateway drill: --against needs --simulator NAME=URL for provider(s) {missing}")
        keys = {c: (keys or {}).get(c, client_key(c)) for c in sc.clients()}
        target = Target("against", against.rstrip("/"), {n: u.rstrip("/") for n, u in sims.items()},
                        admin_key or os.environ.get("GATEWAY_ADMIN_KEY", ""), keys, True)
        runs["against"] = asyncio.run(run_once(sc, target))
    else:
        for mode in ("hybrid", "plain"):
            print(f"drill: {sc.name}: {mode} run ({sc.duration_s:g} s of load)", file=sys.stderr, flush=True)
            runs[mode] = _own_stack_run(sc, mode, out / "runs" / mode)
    deferrable = [n for n, t in sc.tiers.items() if t.get("deferrable") or t.get("async")]
    main_run = runs.get("hybrid") or runs["against"]
    result = {
        "scenario": sc.model_dump(),
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "short": short,
        "incident_window": sc.incident_window(),
        "deferrable_tiers": deferrable,
        "runs": runs,
        "targets": measure.targets(main_run["summary"], runs.get("plain", {}).get("summary"), deferrable),
    }
    report.write(result, out)
    return result


def main(args: argparse.Namespace) -> None:
    try:
        sc = load(args.scenario or (SHORT_SCENARIO if args.short else DEFAULT_SCENARIO))
    except ScenarioError as exc:
        raise SystemExit(f"gateway drill: invalid scenario: {exc}") from None
    out = Path(args.out or f"drill-report/{sc.name}")
    try:
        result = drill(sc, out, args.against, _pairs(args.simulator or [], "--simulator"), args.admin_key,
                       _pairs(args.client_key or [], "--client-key"), args.short)
    except StackError as exc:
        raise SystemExit(f"gateway drill: {exc}") from None
    print(report.text_summary(result))
    print(f"report: {out / 'report.html'} and {out / 'report.json'}")
