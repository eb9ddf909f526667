"""Mode decisions: automatic transitions with hysteresis, and how overrides combine.

``transition`` is a pure function of (current state, window figures, thresholds,
time). Entering ``degraded`` takes one breached figure with enough samples;
leaving takes every figure under its exit threshold for ``hold_s`` without a
break, so a short healthy blip does not flip the mode back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from gateway.config import DegradationConfig, Thresholds
from gateway.health import Figures
from gateway.severity import Mode, most_severe

GLOBAL = "global"


class Source:
    AUTO = "auto"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class AutoState:
    """The automatic controller's state for one scope."""

    mode: Mode = Mode.NORMAL
    since: float = 0.0
    calm_since: float | None = None  # since when the figures allow stepping down
    reason: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "since": self.since, "calm_since": self.calm_since,
                "reason": self.reason, "figures": self.figures}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AutoState:
        return cls(Mode(d.get("mode", "normal")), float(d.get("since", 0.0)), d.get("calm_since"),
                   d.get("reason", ""), d.get("figures") or {})


@dataclass(frozen=True, slots=True)
class Override:
    mode: Mode
    reason: str
    actor: str
    set_at: float
    expires_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "reason": self.reason, "actor": self.actor, "set_at": self.set_at,
                "expires_at": self.expires_at}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Override:
        return cls(Mode(d["mode"]), d.get("reason", ""), d.get("actor", ""), float(d.get("set_at", 0.0)),
                   d.get("expires_at"))

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


def breaches(f: Figures, t: Thresholds, min_samples: int) -> list[str]:
    """The figures over their thresholds, named; none when the window has too few samples."""
    if f.samples < min_samples:
        return []
    out = []
    if f.p95_s is not None and f.p95_s > t.p95_latency_s:
        out.append(f"p95 latency {f.p95_s:.2f}s > {t.p95_latency_s}s")
    if f.rate_limited_ratio > t.rate_limited_ratio:
        out.append(f"429 ratio {f.rate_limited_ratio:.3f} > {t.rate_limited_ratio}")
    if f.error_ratio > t.error_ratio:
        out.append(f"error ratio {f.error_ratio:.3f} > {t.error_ratio}")
    return out


def calm(f: Figures, t: Thresholds) -> bool:
    """Every figure at or under its threshold (an empty window counts as calm)."""
    return (
        (f.p95_s is None or f.p95_s <= t.p95_latency_s)
        and f.rate_limited_ratio <= t.rate_limited_ratio
        and f.error_ratio <= t.error_ratio
    )


def transition(state: AutoState, f: Figures, cfg: DegradationConfig, now: float) -> AutoState:
    """The next automatic state. A changed ``mode`` is a transition to record."""
    figs = f.as_dict()
    if state.mode is Mode.NORMAL:
        why = breaches(f, cfg.enter, cfg.min_samples)
        if why:
            return AutoState(Mode.DEGRADED, now, None, "; ".join(why), figs)
        return replace(state, figures=figs)

    shed_why = breaches(f, cfg.shed, cfg.min_samples) if cfg.shed is not None else []
    if state.mode is Mode.DEGRADED and shed_why:
        return AutoState(Mode.SHED, now, None, "; ".join(shed_why), figs)

    if state.mode is Mode.SHED:
        # Step down to degraded once the shed rule has stayed quiet for hold_s.
        return _hold(state, not shed_why, Mode.DEGRADED, cfg, now, figs)
    return _hold(state, calm(f, cfg.exit), Mode.NORMAL, cfg, now, figs)


def _hold(state: AutoState, ok: bool, lower: Mode, cfg: DegradationConfig, now: float, figs: dict[str, Any]) -> AutoState:
    if not ok:
        return replace(state, calm_since=None, figures=figs)
    calm_since = state.calm_since if state.calm_since is not None else now
    if now - calm_since >= cfg.exit.hold_s:
        return AutoState(lower, now, None, f"healthy for {cfg.exit.hold_s:g}s", figs)
    return replace(state, calm_since=calm_since, figures=figs)


def resolve(auto: Mode, override: Override | None, now: float) -> tuple[Mode, str]:
    """The mode of one scope and its source: an active override wins over the controller."""
    if override is not None and override.active(now):
        return override.mode, Source.OPERATOR
    return auto, Source.AUTO


def effective(global_mode: Mode, provider_mode: Mode) -> Mode:
    """A request's mode: the most severe of the global one and its first target's provider."""
    return most_severe(global_mode, provider_mode)
