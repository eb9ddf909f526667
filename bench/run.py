"""Run the benchmark of issue 8 end to end: ``python -m bench.run [--smoke] [--litellm]``.

Starts Redis, the fast fake upstream, the bare forwarder and the gateway (each
its own process on a free port), runs the scenarios, writes
``bench/results/latest.json`` and ``latest.md``, and prints the table with the
targets' pass/fail. Exit status: 0 when every scenario produced numbers (or was
skipped for a stated reason), 1 when one failed, 2 when the stack did not
start; with ``--strict``, also 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import machine, targets
from bench.load import Driver
from bench.loadgen import LoadGenerator
from bench.plan import Plan
from bench.report import Report, Section
from bench.scenarios import Context, litellm_proxy, memory, profile, queue, streaming, sync, tracing
from bench.services import REPO
from bench.stack import Stack
from bench.wrk import Wrk

Scenario = Callable[[Context], Section]
SCENARIOS: dict[str, Scenario] = {
    "sync": sync.run,
    "streaming": streaming.run,
    "memory": memory.run,
    "queue": queue.run,
    "litellm": litellm_proxy.run,
    "tracing": tracing.run,
    "profile": profile.run,
}
RESULTS = REPO / "bench" / "results"


def pick_driver(choice: str) -> Driver:
    if choice in ("auto", "wrk"):
        found = Wrk.find()
        if found is not None:
            return found
        if choice == "wrk":
            raise SystemExit("bench: wrk is not installed (apt-get install -y wrk)")
    return LoadGenerator()


def method(plan: Plan, driver: Driver) -> dict[str, object]:
    summary = (
        "each of the fake upstream (raw asyncio protocol on uvloop), the bare forwarder (Starlette + aiohttp), "
        "the gateway (production config: client key, tiers, admission, metrics, JSON access log at info to a file) "
        "and Redis runs as its own process on this machine, with the load tool as another; "
        f"sync rows: {plan.warmup_s:g} s warm-up, then {plan.rounds} timed run(s) of {plan.duration_s:g} s per target "
        "and connection count, targets interleaved, the median-req/s run reported; POST of the same JSON body "
        "with a bearer key; "
        f"streaming: {plan.stream_requests} sequential streams per target after {plan.stream_warmup} untimed; "
        f"memory: a fresh gateway, RSS from /proc after warm-up and after {plan.memory_requests:,} more requests"
    )
    return {"summary": summary, "load_tool": f"{driver.name} ({driver.version()})", "plan": dataclasses.asdict(plan)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="short rows, no thresholds: about 30 s (CI)")
    parser.add_argument("--litellm", action="store_true", help="also measure LiteLLM's proxy, if importable")
    parser.add_argument("--profile", action="store_true", help="sample the gateway under load with py-spy")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "builtin"), default="auto",
                        help="load tool: wrk where installed (auto), or the built-in asyncio generator")
    parser.add_argument("--only", help=f"comma-separated scenarios to run (of {', '.join(SCENARIOS)})")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.json and latest.md go")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs and configs")
    parser.add_argument("--label", help="what was measured, for the header (e.g. 'commit abc123, no tracing')")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a measured target is missed")
    return parser.parse_args(argv)


def run_scenarios(ctx: Context, keys: list[str], report: Report) -> None:
    for key in keys:
        started = time.monotonic()
        print(f"bench: {key} ...", file=sys.stderr, flush=True)
        try:
            section = SCENARIOS[key](ctx)
        except Exception as exc:  # a broken scenario is reported, and the others still run
            traceback.print_exc()
            section = Section(key, key, (), failed=f"{type(exc).__name__}: {exc}")
        state = "failed" if section.failed else "skipped" if section.skipped else "ok"
        print(f"bench: {key} {state} in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        report.sections.append(section)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan.smoke() if args.smoke else Plan.full()
    keys = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = [k for k in keys if k not in SCENARIOS]
    if unknown:
        raise SystemExit(f"bench: unknown scenario(s) {', '.join(unknown)}")
    driver = pick_driver(args.loadgen)
    started = time.monotonic()
    report = Report({
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": plan.name,
        "label": args.label,
        "machine": machine.describe(REPO),
        "method": method(plan, driver),
    })
    args.out.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    try:
        with Stack(plan, logs) as stack:
            ctx = Context(plan, driver, stack, args.out, litellm=args.litellm, profile=args.profile)
            run_scenarios(ctx, keys, report)
    except RuntimeError as exc:
        print(f"bench: the stack did not start: {exc}\nbench: logs are in {logs}", file=sys.stderr)
        return 2
    report.meta["elapsed_s"] = round(time.monotonic() - started, 1)
    report.meta["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    report.targets = [] if args.smoke else targets.evaluate(report)
    json_path, md_path = report.write(args.out)
    print(report.as_markdown())
    print(f"bench: wrote {json_path} and {md_path} in {report.meta['elapsed_s']} s", file=sys.stderr)
    if args.keep_logs or not report.ok:
        print(f"bench: logs are in {logs}", file=sys.stderr)
    else:
        shutil.rmtree(logs, ignore_errors=True)
    if not report.ok:
        return 1
    if args.strict and any(t.passed is False for t in report.targets):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
