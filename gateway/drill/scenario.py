"""The drill scenario: traffic, simulated providers, the incident timeline, and gateway tuning.

A scenario is YAML validated by pydantic; unknown keys are errors and every
error names its key path (``traffic.1.rate_per_s: ...``), like the gateway's
own configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.config import SimulatorConfig

_SIM_KEYS = set(SimulatorConfig.model_fields)


class ScenarioError(ValueError):
    """A scenario that cannot run; ``path`` is the offending key path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    name: str = "chat"
    input_per_mtok: float = Field(2.0, ge=0)
    output_per_mtok: float = Field(8.0, ge=0)
    batch_discount: float = Field(0.5, ge=0, le=1)


class ProviderSpec(_Strict):
    """One simulated provider (a ``gateway simulator`` process); the list order is the fallback order."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    latency_ms: float = Field(100.0, ge=0)
    jitter_ms: float = Field(20.0, ge=0)
    batch: bool = False  # offers a batch API the hybrid run may use
    batch_latency_ms: float = Field(2000.0, ge=0)
    max_concurrency: int = Field(64, ge=1)


class TrafficSpec(_Strict):
    """One stream of requests: Poisson arrivals at ``rate_per_s`` from one client into one tier."""

    client: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    tier: str
    rate_per_s: float = Field(gt=0, le=200)
    prompt_tokens: int = Field(200, ge=1, le=100_000)
    max_tokens: int = Field(50, ge=1, le=4096)
    respond_async: float = Field(0.0, ge=0, le=1)  # share sent with Prefer: respond-async (hybrid run only)


class IncidentSpec(_Strict):
    """A change of one provider's behaviour from ``start_s`` to ``end_s``, then back to its base."""

    label: str
    provider: str
    start_s: float = Field(ge=0)
    end_s: float = Field(gt=0)
    behaviour: dict[str, Any] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> IncidentSpec:
        if self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be after start_s ({self.start_s})")
        unknown = sorted(set(self.behaviour) - _SIM_KEYS)
        if unknown:
            raise ValueError(f"behaviour: unknown simulator setting(s) {unknown}; known: {sorted(_SIM_KEYS)}")
        return self


class Scenario(_Strict):
    name: str
    description: str = ""
    duration_s: float = Field(gt=0, le=3600)
    drain_timeout_s: float = Field(120.0, gt=0)  # after the load: how long accepted jobs may take to end
    seed: int = 1
    sample_s: float = Field(1.0, gt=0)  # how often /admin/status is sampled
    model: ModelSpec = Field(default_factory=ModelSpec)
    providers: list[ProviderSpec] = Field(min_length=1)
    traffic: list[TrafficSpec] = Field(min_length=1)
    incidents: list[IncidentSpec] = Field(default_factory=list)
    # Passed through to the gateway's config (tiers, queue, degradation) of the hybrid run; the
    # plain-proxy run takes the same tiers made synchronous and turns degradation off.
    tiers: dict[str, dict[str, Any]] = Field(min_length=1)
    queue: dict[str, Any] = Field(default_factory=dict)
    degradation: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        names = [p.name for p in self.providers]
        if len(set(names)) != len(names):
            raise _Ref("providers", f"provider names must be unique: {names}")
        for i, t in enumerate(self.traffic):
            if t.tier not in self.tiers:
                raise _Ref(f"traffic.{i}.tier", f"unknown tier {t.tier!r}; tiers: {sorted(self.tiers)}")
        for i, inc in enumerate(self.incidents):
            if inc.provider not in names:
                raise _Ref(f"incidents.{i}.provider", f"unknown provider {inc.provider!r}; providers: {names}")
            if inc.start_s >= self.duration_s:
                raise _Ref(f"incidents.{i}.start_s", f"starts at or after the end of the run ({self.duration_s} s)")
        return self

    def incident_window(self) -> tuple[float, float] | None:
        """From the first incident's start to the last one's end (capped at the run's end)."""
        if not self.incidents:
            return None
        return (min(i.start_s for i in self.incidents), min(max(i.end_s for i in self.incidents), self.duration_s))

    def clients(self) -> dict[str, list[str]]:
        """Each client and the tiers it sends, in first-seen order."""
        out: dict[str, list[str]] = {}
        for t in self.traffic:
            tiers = out.setdefault(t.client, [])
            if t.tier not in tiers:
                tiers.append(t.tier)
        return out


class _Ref(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


def parse(raw: Any) -> Scenario:
    """Validate a parsed YAML tree; raise ``ScenarioError`` naming the offending key path."""
    if not isinstance(raw, dict):
        raise ScenarioError("", "a scenario must be a mapping at the top level")
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _Ref):
            raise ScenarioError(".".join([*loc, ctx_error.path]), str(ctx_error)) from None
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        raise ScenarioError(".".join(loc), message) from None


def load(path: str | Path) -> Scenario:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ScenarioError("", f"cannot read scenario {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError("", f"{path} is not valid YAML: {exc}") from None
    return parse(raw)
