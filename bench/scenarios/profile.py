"""Profile (``--profile``): py-spy samples the bare forwarder, then the gateway, under the same load.

Both are sampled at 16 connections for the same time; each function's sampled
time is divided by the requests served meanwhile. The table lists the
functions where the gateway spends the most time per request *beyond* the
forwarder (the gateway's own overhead, wherever it lands: its code, the
libraries it calls, the event loop), then the gateway's own functions by
inclusive time. Raw stacks are kept next to the results
(``profile-gateway.txt``, ``profile-forwarder.txt``; collapsed format, for
speedscope or flamegraph.pl).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from bench.load import LoadResult, LoadSpec
from bench.profiler import PySpy, Samples
from bench.report import Section
from bench.scenarios import Context
from bench.services import Service

CONNECTIONS = 16
RATE_HZ = 250
TOP = 20
OWN_TOP = 12
ENTRY_POINTS = ("gateway/cli.py", "gateway/__main__.py")  # on every stack; they say nothing

COLUMNS = (
    ("list", "list"),
    ("function", "function (file)"),
    ("gateway_us", "gateway µs/req"),
    ("forwarder_us", "forwarder µs/req"),
    ("extra_us", "extra µs/req"),
)


def sample(ctx: Context, spy: PySpy, service: Service, seconds: int, out: Path) -> tuple[Samples, LoadResult]:
    """Sample ``service`` for ``seconds`` in the middle of a load run a little longer than that."""
    spec = LoadSpec(service.url, CONNECTIONS, seconds + 2)
    ctx.driver.run(replace(spec, duration_s=1))  # warm
    results: list[LoadResult] = []
    load = threading.Thread(target=lambda: results.append(ctx.driver.run(spec)))
    load.start()
    recorder = spy.record(service.pid, seconds, out, RATE_HZ)
    _, err = recorder.communicate(timeout=seconds + 60)
    load.join()
    if recorder.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed ({recorder.returncode}): {err.decode(errors='replace')[-500:]}")
    return Samples.read(out), results[0]


def run(ctx: Context) -> Section:
    section = Section("profile", f"Profile at {CONNECTIONS} connections: gateway vs bare forwarder (py-spy)", COLUMNS)
    if not ctx.profile:
        section.skipped = "not requested (pass --profile)"
        return section
    spy = PySpy.find()
    if spy is None:
        section.skipped = "py-spy is not installed (pip install py-spy)"
        return section
    gateway, forwarder = ctx.stack.gateway, ctx.stack.forwarder
    assert gateway is not None and forwarder is not None
    seconds = ctx.plan.profile_s
    fwd, fwd_load = sample(ctx, spy, forwarder, seconds, ctx.results / "profile-forwarder.txt")
    gw, gw_load = sample(ctx, spy, gateway, seconds, ctx.results / "profile-gateway.txt")
    fwd_requests, gw_requests = int(fwd_load.rps * seconds), int(gw_load.rps * seconds)
    gw_self = gw.per_request_us(gw.self_counts, RATE_HZ, gw_requests)
    fwd_self = fwd.per_request_us(fwd.self_counts, RATE_HZ, fwd_requests)
    section.rows.append({"list": "all samples", "function": "(every stack)",
                         "gateway_us": gw.total * 1e6 / RATE_HZ / max(gw_requests, 1),
                         "forwarder_us": fwd.total * 1e6 / RATE_HZ / max(fwd_requests, 1)})
    section.rows[0]["extra_us"] = section.rows[0]["gateway_us"] - section.rows[0]["forwarder_us"]
    extra = sorted(set(gw_self) | set(fwd_self), key=lambda f: gw_self.get(f, 0) - fwd_self.get(f, 0), reverse=True)
    for name in extra[:TOP]:
        g, f = gw_self.get(name, 0.0), fwd_self.get(name, 0.0)
        section.rows.append({"list": "self, beyond forwarder", "function": name,
                             "gateway_us": g, "forwarder_us": f, "extra_us": g - f})
    gw_total = gw.per_request_us(gw.total_counts, RATE_HZ, gw_requests)
    own = [n for n in gw_total if "gateway/" in n and not any(e in n for e in ENTRY_POINTS)]
    for name in sorted(own, key=gw_total.__getitem__, reverse=True)[:OWN_TOP]:
        section.rows.append({"list": "gateway code, inclusive", "function": name, "gateway_us": gw_total[name]})
    section.notes.append(
        f"{seconds} s at {RATE_HZ} Hz each: forwarder {fwd_load.rps:,.0f} req/s ({fwd.total:,} samples), "
        f"gateway {gw_load.rps:,.0f} req/s ({gw.total:,} samples), sampling on. µs/req is sampled wall time of "
        "the busy thread per request; it includes waiting for a CPU when the machine is contended."
    )
    section.notes.append("Raw stacks: profile-forwarder.txt, profile-gateway.txt next to latest.json.")
    return section
