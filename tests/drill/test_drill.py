"""The incident drill: the short scenario end to end (both runs, live processes), the report, the browser view.

Also table tests for the scenario schema's errors and for the measurement functions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.drill import measure
from gateway.drill.load import Record, arrivals
from gateway.drill.scenario import ModelSpec, ScenarioError, load, parse
from gateway.drill.stack import ADMIN_KEY, Stack, client_key, gateway_config
from gateway.drill.timeline import steps

ROOT = Path(__file__).resolve().parents[2]
SHORT = ROOT / "config" / "scenarios" / "ci-short.yaml"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


# -- the short drill, end to end


@pytest.fixture(scope="module")
def short_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("drill")
    proc = subprocess.run([sys.executable, "-m", "gateway", "drill", "--short", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=55)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    assert "report:" in proc.stdout
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.timeout(60)
def test_short_drill_report_is_complete_and_consistent(short_report: tuple[Path, dict[str, Any]]) -> None:
    out, report = short_report
    assert (out / "report.html").stat().st_size > 0
    assert set(report["runs"]) == {"hybrid", "plain"}
    for name, run in report["runs"].items():
        records = run["records"]
        summary = run["summary"]
        tiers = summary["tiers"]
        assert set(tiers) == {"interactive", "standard", "background"}, name
        assert summary["all"]["sent"] == len(records) == sum(t["sent"] for t in tiers.values()) > 0
        for tier, s in tiers.items():
            assert s["succeeded"] + s["failed"] == s["sent"], (name, tier)
            assert s["accepted"] == s["terminal"] + s["lost"], (name, tier)
            assert s["lost"] == 0, (name, tier)
            assert s["sync"]["count"] + s["deferred"] + sum(1 for r in records if r["tier"] == tier
                                                              and r["status"] is None) == s["sent"]
            assert abs(s["spend_usd"] - s["spend_realtime_usd"] - s["spend_batch_usd"]) < 1e-9
        assert summary["all"]["lost"] == 0
        # The gateway's own cost counters agree with the spend computed from the answers' usage.
        metric_total = sum(run["metric_spend_usd"].values())
        assert metric_total == pytest.approx(summary["all"]["spend_usd"], rel=0.02), name
        assert run["samples"], name
        assert [i["label"] for i in run["incidents"]] == ["429 storm: start", "429 storm: end"]
    hybrid, plain = report["runs"]["hybrid"], report["runs"]["plain"]
    # Same traffic in both runs.
    assert [(r["tier"], r["t"]) for r in hybrid["records"]] == [(r["tier"], r["t"]) for r in plain["records"]]
    # The plain proxy defers nothing, never changes mode and pays realtime prices only.
    assert plain["summary"]["all"]["deferred"] == 0
    assert plain["mode_timeline"] == []
    assert plain["summary"]["all"]["spend_batch_usd"] == 0
    # The hybrid run queues background work into provider batches and degrades on the storm.
    assert hybrid["summary"]["tiers"]["background"]["via"].get("provider_batch", 0) > 0
    assert any(tr["to"] == "degraded" and tr["source"] == "auto" for tr in hybrid["mode_timeline"])
    assert {t["target"] for t in report["targets"]} >= {"0 lost", "deferrable work 100% completed"}


@pytest.mark.timeout(60)
@pytest.mark.timeout(90)
def test_against_drives_a_running_gateway_in_one_run(tmp_path: Path) -> None:
    # A gateway and simulators the drill did not start: it only gets their addresses and keys.
    sc = load(SHORT)
    stack = Stack(sc, "hybrid", tmp_path / "stack").start()
    try:
        sims = [f"{name}={url}" for name, url in stack.sim_urls.items()]
        keys = [f"{c}={client_key(c)}" for c in sc.clients()]
        argv = [sys.executable, "-m", "gateway", "drill", "--scenario", str(SHORT), "--out", str(tmp_path / "out"),
                "--against", stack.gateway_url, "--admin-key", ADMIN_KEY]
        for sim in sims:
            argv += ["--simulator", sim]
        for key in keys:
            argv += ["--client-key", key]
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=80)
    finally:
        stack.stop()
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(report["runs"]) == {"against"}
    run = report["runs"]["against"]
    assert run["summary"]["all"]["sent"] == len(run["records"]) > 0
    assert run["summary"]["all"]["lost"] == 0
    assert [i["label"] for i in run["incidents"]] == ["429 storm: start", "429 storm: end"]
    assert run["samples"]


def test_against_without_every_simulator_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "gateway", "drill", "--scenario", str(SHORT), "--out", str(tmp_path),
                           "--against", "http://127.0.0.1:9", "--simulator", "primary=http://127.0.0.1:9"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "--simulator NAME=URL" in proc.stderr and "fallback" in proc.stderr


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_renders_in_chromium(short_report: tuple[Path, dict[str, Any]]) -> None:
    from playwright.sync_api import sync_playwright

    out, _ = short_report
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto((out / "report.html").as_uri())
            for plot in ("plot-latency", "plot-queue", "plot-cost"):
                svg = page.locator(f"#{plot} svg")
                assert svg.count() == 1, plot
                box = svg.bounding_box()
                assert box is not None and box["width"] > 200 and box["height"] > 100, (plot, box)
                # Drawn data, not an empty frame: paths and markers inside the SVG.
                assert page.locator(f"#{plot} svg path").count() > 20, plot
            assert page.locator("table").count() >= 2
            assert all(u.startswith("file:") for u in requests), requests  # self-contained: nothing fetched
            page.screenshot(path=str(ARTIFACTS / "drill-report.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "drill-report.png").stat().st_size > 0


# -- the scenario schema

VALID: dict[str, Any] = {
    "name": "t", "duration_s": 10,
    "providers": [{"name": "primary"}, {"name": "fallback"}],
    "traffic": [{"client": "web", "tier": "interactive", "rate_per_s": 2}],
    "incidents": [{"label": "x", "provider": "primary", "start_s": 1, "end_s": 2, "behaviour": {"error_ratio": 1.0}}],
    "tiers": {"interactive": {"priority": 0}},
}


def _with(path: str, value: Any) -> dict[str, Any]:
    tree = json.loads(json.dumps(VALID))
    node: Any = tree
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return tree


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "error_path", "message"),
    [
        ("duration_s", _DELETE, "duration_s", "required key is missing"),
        ("duration_s", -1, "duration_s", "greater than 0"),
        ("surprise", 1, "surprise", "unknown key"),
        ("traffic.0.rate_per_s", 0, "traffic.0.rate_per_s", "greater than 0"),
        ("traffic.0.tier", "nope", "traffic.0.tier", "unknown tier 'nope'"),
        ("traffic.0.respond_async", 1.5, "traffic.0.respond_async", "less than or equal to 1"),
        ("incidents.0.provider", "ghost", "incidents.0.provider", "unknown provider 'ghost'"),
        ("incidents.0.end_s", 0.5, "incidents.0", "must be after start_s"),
        ("incidents.0.behaviour", {"latency": 5}, "incidents.0", "unknown simulator setting(s) ['latency']"),
        ("duration_s", 1, "incidents.0.start_s", "at or after the end of the run"),
        ("providers", [{"name": "a"}, {"name": "a"}], "providers", "must be unique"),
        ("providers.0.name", "Bad Name", "providers.0.name", "should match pattern"),
        ("tiers", {}, "tiers", "at least 1"),
    ],
)
def test_scenario_errors_name_the_key(path: str, value: Any, error_path: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse(_with(path, value))
    assert info.value.path == error_path
    assert message in str(info.value)


def test_shipped_scenarios_are_valid() -> None:
    from gateway.drill.scenario import load

    names = {p.stem: load(p) for p in (ROOT / "config" / "scenarios").glob("*.yaml")}
    assert {"429-storm", "latency-spike", "provider-outage", "ci-short"} <= set(names)
    assert names["429-storm"].incident_window() == (30, 70)
    assert names["latency-spike"].incident_window() == (80, 110)


def test_plain_config_is_a_plain_proxy() -> None:
    sc = parse({**VALID, "providers": [{"name": "primary", "batch": True}],
                "incidents": [], "tiers": {"interactive": {"priority": 0},
                                           "background": {"priority": 2, "async": True, "provider_batch": True}}})
    urls = {"primary": "http://127.0.0.1:1/v1"}
    hybrid = gateway_config(sc, "hybrid", urls, "redis://x", Path("/tmp"))
    plain = gateway_config(sc, "plain", urls, "redis://x", Path("/tmp"))
    assert hybrid["providers"]["primary"]["batch"] is True and hybrid["degradation"]["enabled"] is True
    assert plain["providers"]["primary"]["batch"] is False and plain["degradation"]["enabled"] is False
    assert plain["tiers"]["background"]["async"] is False and plain["tiers"]["background"]["provider_batch"] is False
    from gateway.config import parse as parse_config

    parse_config(plain)
    parse_config(hybrid)


# -- measurements


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 95, None), ([3.0], 99, 3.0), ([1.0, 2.0, 3.0, 4.0, 5.0], 50, 3.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
     ([float(i) for i in range(1, 101)], 95, 95.05), ([5.0, 1.0], 100, 5.0), ([5.0, 1.0], 0, 1.0)],
)
def test_percentile(values: list[float], q: float, expected: float | None) -> None:
    got = measure.percentile(values, q)
    assert got == (None if expected is None else pytest.approx(expected))


def _rec(t: float, **kw: Any) -> Record:
    r = Record("interactive", "web", t)
    r.status, r.latency_s = kw.pop("status", 200), kw.pop("latency_s", 0.1)
    for k, v in kw.items():
        setattr(r, k, v)
    return r


@pytest.mark.parametrize(
    ("times", "window", "calm", "incident"),
    [([0, 10, 20], (5, 15), [0, 20], [10]), ([5, 15], (5, 15), [15], [5]), ([1, 2], None, [1, 2], [])],
)
def test_split_calm_and_incident(times: list[float], window: Any, calm: list[float], incident: list[float]) -> None:
    c, i = measure.split([_rec(t) for t in times], window)
    assert [r.t for r in c] == calm and [r.t for r in i] == incident


@pytest.mark.parametrize(
    ("records", "lost"),
    [
        ([_rec(0)], 0),
        ([_rec(0, job_id="j1", deferred=True, job_status="succeeded")], 0),
        ([_rec(0, job_id="j1", deferred=True, job_status=None)], 1),
        ([_rec(0, job_id="j1", deferred=True, job_status="failed"), _rec(1, job_id="j2", deferred=True)], 1),
    ],
)
def test_lost_is_accepted_minus_terminal(records: list[Record], lost: int) -> None:
    assert measure.lost(records) == lost
    s = measure.tier_summary(records, None, ModelSpec())
    assert s["lost"] == lost == s["accepted"] - s["terminal"]


def test_spend_uses_batch_price_for_provider_batches() -> None:
    price = ModelSpec(input_per_mtok=2.0, output_per_mtok=8.0, batch_discount=0.5)
    rt = _rec(0, prompt_tokens=1000, completion_tokens=100)
    bt = _rec(0, prompt_tokens=1000, completion_tokens=100, job_id="j", deferred=True, job_status="succeeded",
              via="provider_batch")
    failed = _rec(0, status=429, prompt_tokens=1000)
    assert measure.spend_usd(rt, price) == pytest.approx(0.0028)
    assert measure.spend_usd(bt, price) == pytest.approx(0.0014)
    assert measure.spend_usd(failed, price) == 0.0


def test_sync_latency_excludes_jobs_and_unanswered() -> None:
    rs = [_rec(0, latency_s=0.2), _rec(0, latency_s=5.0, job_id="j", deferred=True), _rec(0, status=None, latency_s=1)]
    assert measure.sync_latencies(rs) == [0.2]


def test_mode_bands_from_the_audit() -> None:
    audit = [{"time": 130.0, "scope": "primary", "from": "degraded", "to": "normal", "source": "auto"},
             {"time": 105.0, "scope": "primary", "from": "normal", "to": "degraded", "source": "auto"},
             {"time": 140.0, "scope": "global", "from": "normal", "to": "shed", "source": "operator"},
             {"time": 141.0, "action": "job.cancel"}]
    timeline = measure.mode_timeline(audit, 100.0)
    assert [(t["t"], t["to"]) for t in timeline] == [(5.0, "degraded"), (30.0, "normal"), (40.0, "shed")]
    assert measure.mode_bands(timeline, 50.0) == [
        {"scope": "primary", "mode": "degraded", "start": 5.0, "end": 30.0},
        {"scope": "global", "mode": "shed", "start": 40.0, "end": 50.0},
    ]


def test_timeline_steps_revert_to_base() -> None:
    sc = parse(VALID)
    plan = steps(sc.incidents, {"primary": {"error_ratio": 0.0}, "fallback": {}}, sc.duration_s)
    assert [(s.at_s, s.change) for s in plan] == [(1, {"error_ratio": 1.0}), (2, {"error_ratio": 0.0})]


def test_arrivals_are_reproducible_and_in_range() -> None:
    import random

    a = arrivals(5.0, 10.0, random.Random(1))
    assert a == arrivals(5.0, 10.0, random.Random(1))
    assert all(0 < t < 10 for t in a) and 25 < len(a) < 80
