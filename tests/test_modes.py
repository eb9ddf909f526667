"""Mode decisions as tables: automatic transitions with hysteresis, overrides, the effective mode."""

from __future__ import annotations

import orjson
import pytest

from gateway.config import DegradationConfig, ExitThresholds, Thresholds
from gateway.health import Figures
from gateway.modes import AutoState, Override, Source, breaches, calm, effective, resolve, transition
from gateway.severity import Mode, most_severe

N, D, S = Mode.NORMAL, Mode.DEGRADED, Mode.SHED

CFG = DegradationConfig(
    window_s=30,
    min_samples=20,
    enter=Thresholds(p95_latency_s=8.0, rate_limited_ratio=0.05, error_ratio=0.2),
    exit=ExitThresholds(p95_latency_s=4.0, rate_limited_ratio=0.01, error_ratio=0.05, hold_s=60),
    shed=Thresholds(p95_latency_s=20.0, rate_limited_ratio=0.5, error_ratio=0.6),
)
NO_SHED = CFG.model_copy(update={"shed": None})


def figs(samples: int = 100, p95: float | None = 0.5, rl: float = 0.0, err: float = 0.0) -> Figures:
    return Figures(samples=samples, p50_s=None if p95 is None else p95 / 2, p95_s=p95, rate_limited_ratio=rl,
                   error_ratio=err)


HEALTHY = figs()
EMPTY = Figures()
STORM = figs(rl=0.3)  # breaches enter, not shed
SLOW = figs(p95=9.5)
ERRORS = figs(err=0.25)
GREY = figs(rl=0.03)  # under enter, over exit: neither a breach nor calm
GREY_SLOW = figs(p95=6.0)
SEVERE = figs(rl=0.8)  # breaches shed
SEVERE_SLOW = figs(p95=25.0)
FEW = figs(samples=19, rl=1.0)  # one short of min_samples, every attempt a 429
FEW_SEVERE = figs(samples=19, rl=1.0, err=0.0, p95=30.0)
AT_ENTER = figs(p95=8.0, rl=0.05, err=0.2)  # exactly at the enter thresholds: not over them
AT_EXIT = figs(p95=4.0, rl=0.01, err=0.05)  # exactly at the exit thresholds: calm
JUST_OVER_EXIT = figs(rl=0.011)


def auto(mode: Mode, since: float = 100.0, calm_since: float | None = None) -> AutoState:
    return AutoState(mode, since, calm_since, "earlier", {})


@pytest.mark.parametrize(
    "case,state,f,now,cfg,mode,since,calm_since,why",
    [
        # normal: one breached figure with enough samples enters degraded at once
        ("healthy stays", auto(N), HEALTHY, 200, CFG, N, 100, None, "earlier"),
        ("empty window stays", auto(N), EMPTY, 200, CFG, N, 100, None, "earlier"),
        ("429 storm enters", auto(N), STORM, 200, CFG, D, 200, None, "429 ratio"),
        ("p95 spike enters", auto(N), SLOW, 200, CFG, D, 200, None, "p95 latency"),
        ("error burst enters", auto(N), ERRORS, 200, CFG, D, 200, None, "error ratio"),
        ("at the thresholds stays", auto(N), AT_ENTER, 200, CFG, N, 100, None, "earlier"),
        ("grey zone stays", auto(N), GREY, 200, CFG, N, 100, None, "earlier"),
        ("too few samples stay", auto(N), FEW, 200, CFG, N, 100, None, "earlier"),
        ("too few even if severe", auto(N), FEW_SEVERE, 200, CFG, N, 100, None, "earlier"),
        ("severe enters degraded first", auto(N), SEVERE, 200, CFG, D, 200, None, "429 ratio"),
        # degraded: the calm clock starts, runs, breaks, and ends in normal after hold_s
        ("calm starts the clock", auto(D), HEALTHY, 200, CFG, D, 100, 200, "earlier"),
        ("empty window is calm", auto(D), EMPTY, 200, CFG, D, 100, 200, "earlier"),
        ("at exit thresholds is calm", auto(D), AT_EXIT, 200, CFG, D, 100, 200, "earlier"),
        ("calm keeps its start", auto(D, calm_since=200), HEALTHY, 230, CFG, D, 100, 200, "earlier"),
        ("just short of hold_s", auto(D, calm_since=200), HEALTHY, 259.9, CFG, D, 100, 200, "earlier"),
        ("hold_s of calm steps down", auto(D, calm_since=200), HEALTHY, 260, CFG, N, 260, None, "healthy for 60s"),
        ("blip then storm again", auto(D, calm_since=200), STORM, 230, CFG, D, 100, None, "earlier"),
        ("grey breaks the calm", auto(D, calm_since=200), GREY, 230, CFG, D, 100, None, "earlier"),
        ("slow grey breaks the calm", auto(D, calm_since=200), GREY_SLOW, 230, CFG, D, 100, None, "earlier"),
        ("just over exit breaks it", auto(D, calm_since=200), JUST_OVER_EXIT, 230, CFG, D, 100, None, "earlier"),
        ("storm keeps degraded", auto(D), STORM, 200, CFG, D, 100, None, "earlier"),
        ("few samples are no proof of health", auto(D), FEW, 200, CFG, D, 100, None, "earlier"),
        # escalation to shed and the step back down, one level at a time
        ("severe escalates", auto(D, calm_since=150), SEVERE, 200, CFG, S, 200, None, "429 ratio"),
        ("severe latency escalates", auto(D), SEVERE_SLOW, 200, CFG, S, 200, None, "p95 latency"),
        ("no shed rule, no escalation", auto(D), SEVERE, 200, NO_SHED, D, 100, None, "earlier"),
        ("few samples do not escalate", auto(D), FEW_SEVERE, 200, CFG, D, 100, None, "earlier"),
        ("severe keeps shed", auto(S, calm_since=150), SEVERE, 200, CFG, S, 100, None, "earlier"),
        ("shed quiet starts the clock", auto(S), STORM, 200, CFG, S, 100, 200, "earlier"),
        ("shed quiet on few samples", auto(S), FEW_SEVERE, 200, CFG, S, 100, 200, "earlier"),
        ("shed steps down to degraded", auto(S, calm_since=200), STORM, 260, CFG, D, 260, None, "healthy for 60s"),
        ("even when all is healthy", auto(S, calm_since=200), HEALTHY, 260, CFG, D, 260, None, "healthy for 60s"),
        ("shed rule dropped from config", auto(S, calm_since=200), SEVERE, 260, NO_SHED, D, 260, None, "healthy"),
    ],
)
def test_transition(case, state, f, now, cfg, mode, since, calm_since, why):
    after = transition(state, f, cfg, now)
    assert (after.mode, after.since, after.calm_since) == (mode, since, calm_since), case
    assert why in after.reason, (case, after.reason)
    assert after.figures == f.as_dict(), case  # the figures that drove (or held) the decision


def run(states: AutoState, timeline: list[tuple[float, Figures]], cfg: DegradationConfig = CFG) -> list[Mode]:
    modes = []
    for now, f in timeline:
        states = transition(states, f, cfg, now)
        modes.append(states.mode)
    return modes


def test_a_short_healthy_blip_does_not_flip_the_mode():
    # A storm, 59 s of health (one short of hold_s), the storm again, then health for good.
    timeline = [(0.0, STORM)]
    timeline += [(float(t), HEALTHY) for t in range(1, 60)]
    timeline += [(60.0, STORM), (61.0, STORM)]
    timeline += [(float(t), HEALTHY) for t in range(62, 123)]
    modes = run(AutoState(), timeline)
    assert modes[0] is D
    assert all(m is D for m in modes[:-1]), "left degraded before hold_s of unbroken health"
    assert modes[-1] is N  # at t=122: healthy since 62 for the full 60 s


def test_flapping_figures_never_leave_degraded():
    timeline = [(0.0, STORM)] + [(float(t), HEALTHY if t % 10 else GREY) for t in range(1, 400)]
    assert set(run(AutoState(), timeline)) == {D}


def test_from_shed_back_to_normal_takes_two_holds():
    timeline = [(0.0, STORM), (1.0, SEVERE)] + [(float(t), HEALTHY) for t in range(2, 200)]
    modes = run(AutoState(), timeline)
    assert modes[:2] == [D, S]
    first_degraded = modes.index(D, 2)
    assert timeline[first_degraded][0] == 62.0  # quiet from t=2 for hold_s
    first_normal = modes.index(N)
    # Degraded's own calm clock starts on the first tick after the step down (t=63), then runs hold_s.
    assert timeline[first_normal][0] == 123.0


def test_a_zero_hold_steps_down_on_the_first_calm_tick():
    cfg = CFG.model_copy(update={"exit": CFG.exit.model_copy(update={"hold_s": 0.0})})
    assert transition(auto(D), HEALTHY, cfg, 200).mode is N


@pytest.mark.parametrize(
    "f,min_samples,named",
    [
        (HEALTHY, 20, []),
        (STORM, 20, ["429 ratio"]),
        (figs(p95=9.0, rl=0.5, err=0.9), 20, ["p95 latency", "429 ratio", "error ratio"]),
        (figs(samples=20, rl=0.5), 20, ["429 ratio"]),  # exactly min_samples is enough
        (figs(samples=19, rl=0.5), 20, []),
        (figs(p95=None, rl=1.0), 20, ["429 ratio"]),  # an all-429 window has no latency figure
        (EMPTY, 1, []),
    ],
)
def test_breaches(f, min_samples, named):
    found = breaches(f, CFG.enter, min_samples)
    assert len(found) == len(named)
    for text, name in zip(found, named):
        assert text.startswith(name)


@pytest.mark.parametrize(
    "f,expected",
    [(HEALTHY, True), (EMPTY, True), (AT_EXIT, True), (figs(p95=None), True), (JUST_OVER_EXIT, False),
     (GREY_SLOW, False), (figs(err=0.06), False), (FEW, False)],
)
def test_calm(f, expected):
    assert calm(f, CFG.exit) is expected


def override(mode: Mode, expires_at: float | None) -> Override:
    return Override(mode, "drill", "oncall", 100.0, expires_at)


@pytest.mark.parametrize(
    "auto_mode,ov,now,expected",
    [
        (N, None, 150, (N, Source.AUTO)),
        (D, None, 150, (D, Source.AUTO)),
        (N, override(D, 200), 150, (D, Source.OPERATOR)),
        (N, override(S, None), 10**9, (S, Source.OPERATOR)),  # no TTL: until cleared
        (D, override(N, 200), 150, (N, Source.OPERATOR)),  # an override wins even when it is milder
        (S, override(D, 200), 199.99, (D, Source.OPERATOR)),
        (S, override(N, 200), 200, (S, Source.AUTO)),  # expired at its TTL: automatic control again
        (D, override(N, 200), 250, (D, Source.AUTO)),
    ],
)
def test_resolve(auto_mode, ov, now, expected):
    assert resolve(auto_mode, ov, now) == expected


@pytest.mark.parametrize("global_mode", list(Mode))
@pytest.mark.parametrize("provider_mode", list(Mode))
def test_effective_is_the_most_severe(global_mode, provider_mode):
    expected = global_mode if global_mode.rank >= provider_mode.rank else provider_mode
    assert effective(global_mode, provider_mode) is expected
    assert effective(provider_mode, global_mode) is expected


def test_severity_order():
    assert [m.rank for m in (N, D, S)] == [0, 1, 2]
    assert most_severe() is N
    assert most_severe(D, N, S, N) is S


def test_states_survive_the_trip_through_redis_json():
    state = transition(auto(D, calm_since=123.5), HEALTHY, CFG, 150)
    assert AutoState.from_dict(orjson.loads(orjson.dumps(state.to_dict()))) == state
    assert AutoState.from_dict({}) == AutoState()
    for ov in (override(S, None), override(D, 160.25)):
        assert Override.from_dict(orjson.loads(orjson.dumps(ov.to_dict()))) == ov
