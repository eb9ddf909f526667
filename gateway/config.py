"""Configuration: the YAML contract of DESIGN.md §3, validated by pydantic.

Strings may use ``${VAR}`` and ``${VAR:-default}``; interpolation happens on the
parsed values, so a secret containing YAML syntax cannot change the structure.
Unknown keys are errors, and every error names its full key path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.errors import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)
    body_timeout_s: float = Field(30.0, gt=0)  # a request body must arrive within this
    max_connections: int | None = Field(None, ge=1)  # beyond it new connections get 503; default unlimited
    admin_port: int | None = Field(None, ge=0, le=65535)  # serve /admin/* on its own listener, not the API's
    cors_origins: list[str] = Field(default_factory=list)  # CORS is off unless origins are listed
    shutdown_grace_s: float = Field(30.0, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "text"] = "auto"
    access_log: bool = True


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class RedisConfig(_Strict):
    url: str = DEFAULT_REDIS_URL
    # auto: start a private redis-server only when the default URL does not answer;
    # always: start (or share) one under private_dir whatever the URL; never: wait for url.
    private: Literal["auto", "always", "never"] = "auto"
    private_dir: str = ".gateway"


class KeyConfig(_Strict):
    name: str
    key: str | None = None
    key_sha256: str | None = None

    @model_validator(mode="after")
    def _one_key(self) -> KeyConfig:
        if bool(self.key) == bool(self.key_sha256):
            raise _RefError("key", "give exactly one of key or key_sha256 (a non-empty value)")
        if self.key_sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", self.key_sha256):
            raise _RefError("key_sha256", "must be 64 hex digits")
        return self


class ClientLimitsConfig(_Strict):
    """Per-client limits, enforced across every replica through Redis."""

    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    max_inflight: int | None = Field(None, ge=1)


class ClientConfig(KeyConfig):
    tiers: list[str] = Field(min_length=1)
    default_tier: str
    # Hosts (names, IP addresses or CIDR ranges) this client may name in X-Gateway-Callback-Url.
    callback_hosts: list[str] = Field(default_factory=list)
    # The HMAC-SHA256 secret that signs this client's webhooks.
    webhook_secret: str | None = None
    limits: ClientLimitsConfig | None = None
    # The tier this client's Batch API lines are queued in (default: background if allowed, else default_tier).
    batch_tier: str | None = None

    @model_validator(mode="after")
    def _default_in_tiers(self) -> ClientConfig:
        if self.default_tier not in self.tiers:
            raise _RefError("default_tier", f"{self.default_tier!r} is not in this client's tiers {self.tiers}")
        if self.batch_tier is not None and self.batch_tier not in self.tiers:
            raise _RefError("batch_tier", f"{self.batch_tier!r} is not in this client's tiers {self.tiers}")
        return self


class AuthConfig(_Strict):
    admin_keys: list[KeyConfig] = Field(default_factory=list)
    clients: list[ClientConfig] = Field(default_factory=list)


class CircuitConfig(_Strict):
    failure_threshold: int = Field(5, ge=1)
    cooldown_s: float = Field(30.0, gt=0)


class SimulatorConfig(_Strict):
    """Behaviour of a built-in fake provider; the standalone simulator can change it at run time."""

    latency_ms: float = Field(20.0, ge=0)
    latency_jitter_ms: float = Field(5.0, ge=0)
    first_token_ms: float = Field(10.0, ge=0)
    chunk_interval_ms: float = Field(2.0, ge=0)
    output_tokens: int = Field(16, ge=1)
    rate_limited_ratio: float = Field(0.0, ge=0, le=1)
    error_ratio: float = Field(0.0, ge=0, le=1)
    batch_latency_ms: float = Field(2000.0, ge=0)  # how long a provider batch takes to complete


class ProviderConfig(_Strict):
    kind: Literal["openai", "anthropic", "simulator"]
    base_url: str | None = None
    api_key: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    max_concurrency: int = Field(64, ge=1)
    # A hard cap across every replica, through Redis (two round trips per attempt; off by default).
    global_max_concurrency: int | None = Field(None, ge=1)
    # The drain envelope: deferred work never exceeds these rates (shared by every replica).
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    batch: bool = False
    # The provider's batch completion window: only jobs that accept a delay this long are packed.
    batch_window_s: float = Field(86400.0, gt=0)
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)

    @model_validator(mode="after")
    def _kind_needs(self) -> ProviderConfig:
        if self.kind in ("openai", "anthropic") and not self.base_url:
            raise _RefError("base_url", f"a provider of kind {self.kind!r} needs base_url")
        return self


class TargetConfig(_Strict):
    provider: str
    model: str


class PricingConfig(_Strict):
    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)
    batch_discount: float = Field(0.5, ge=0, le=1)


class ModelConfig(_Strict):
    targets: list[TargetConfig] = Field(min_length=1)
    pricing: PricingConfig = Field(default_factory=PricingConfig)


class TierConfig(_Strict):
    priority: int = Field(ge=0)
    reserved_concurrency: int = Field(0, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    first_byte_timeout_s: float | None = Field(None, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    admission_timeout_s: float = Field(1.0, ge=0)
    retries: int = Field(1, ge=0)
    deferrable: bool = False
    hold_s: float = Field(0.0, ge=0)
    async_: bool = Field(False, alias="async")
    max_delay_s: float = Field(86400.0, gt=0)
    provider_batch: bool = False


class QueueConfig(_Strict):
    mini_batch_size: int = Field(16, ge=1)
    mini_batch_wait_s: float = Field(1.0, ge=0)
    provider_batch_min_items: int = Field(100, ge=1)
    provider_batch_max_wait_s: float = Field(600.0, ge=0)
    provider_batch_poll_s: float = Field(30.0, gt=0)  # first poll of a submitted batch; later polls back off
    max_attempts: int = Field(5, ge=1)
    # A job taken by a worker that then goes silent this long is reclaimed by another.
    visibility_timeout_s: float = Field(60.0, gt=0)
    result_ttl_s: int = Field(86400, ge=60)
    webhook_attempts: int = Field(5, ge=1)
    namespace: str = Field("gw", pattern=r"^[A-Za-z0-9_.-]+$")


class FilesConfig(_Strict):
    """The file store behind /v1/files: bytes on local disk, metadata in Redis."""

    dir: str = ".gateway/files"  # shared by every replica and worker that serves the Batch API
    max_bytes: int = Field(200 * 1024 * 1024, gt=0)
    ttl_s: int = Field(30 * 86400, ge=3600)  # unless the upload's expires_after says otherwise
    sweep_s: float = Field(10.0, gt=0)  # client batches' missed progress, expiry; files left on disk


class Thresholds(_Strict):
    p95_latency_s: float = Field(gt=0)
    rate_limited_ratio: float = Field(ge=0, le=1)
    error_ratio: float = Field(ge=0, le=1)


class ExitThresholds(Thresholds):
    hold_s: float = Field(60.0, ge=0)


class DegradationConfig(_Strict):
    enabled: bool = True  # automatic control; operators can always set modes
    window_s: float = Field(30.0, gt=0)
    min_samples: int = Field(20, ge=1)
    # Optional escalation from degraded to shed, when the figures pass these too.
    shed: Thresholds | None = None
    enter: Thresholds = Field(
        default_factory=lambda: Thresholds(p95_latency_s=8.0, rate_limited_ratio=0.05, error_ratio=0.2)
    )
    exit: ExitThresholds = Field(
        default_factory=lambda: ExitThresholds(
            p95_latency_s=4.0, rate_limited_ratio=0.01, error_ratio=0.05, hold_s=60.0
        )
    )


class Config(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    providers: dict[str, ProviderConfig] = Field(min_length=1)
    models: dict[str, ModelConfig] = Field(min_length=1)
    tiers: dict[str, TierConfig] = Field(min_length=1)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    degradation: DegradationConfig = Field(default_factory=DegradationConfig)
    files: FilesConfig = Field(default_factory=FilesConfig)

    @model_validator(mode="after")
    def _references(self) -> Config:
        # Cross-references are checked here so the error can name the exact key path.
        for model_name, model in self.models.items():
            for i, target in enumerate(model.targets):
                if target.provider not in self.providers:
                    raise _RefError(
                        f"models.{model_name}.targets.{i}.provider",
                        f"unknown provider {target.provider!r}",
                    )
        for i, client in enumerate(self.auth.clients):
            for j, tier in enumerate(client.tiers):
                if tier not in self.tiers:
                    raise _RefError(f"auth.clients.{i}.tiers.{j}", f"unknown tier {tier!r}")
        return self

    @property
    def top_priority(self) -> int:
        return min(t.priority for t in self.tiers.values())


class _RefError(ValueError):
    """A validator's error for one key; ``path`` is relative to the model that raised it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


def embedded_default() -> dict[str, Any]:
    """The configuration ``gateway serve`` runs with when none is given."""
    return {
        "redis": {"url": "${REDIS_URL:-redis://127.0.0.1:6379/0}"},
        "providers": {"simulator": {"kind": "simulator", "max_concurrency": 64}},
        "models": {"sim-1": {"targets": [{"provider": "simulator", "model": "sim-1"}]}},
        "tiers": {
            "interactive": {
                "priority": 0,
                "reserved_concurrency": 16,
                "timeout_s": 30,
                "first_byte_timeout_s": 10,
                "retries": 1,
            },
            "standard": {
                "priority": 1,
                "reserved_concurrency": 4,
                "timeout_s": 60,
                "retries": 2,
                "deferrable": True,
                "hold_s": 15,
            },
            "background": {"priority": 2, "async": True, "max_delay_s": 86400, "provider_batch": True},
        },
    }


def interpolate(value: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a parsed tree."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env and env[name] != "":
                return env[name]
            if default is not None:
                return default
            if name in env:
                return ""
            raise ConfigError(path, f"environment variable {name} is not set (use ${{{name}:-default}})")

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{path}.{i}") for i, v in enumerate(value)]
    return value


def parse(raw: Any, env: Mapping[str, str] | None = None) -> Config:
    """Validate a parsed YAML tree; raise ``ConfigError`` naming the offending key path."""
    if not isinstance(raw, dict):
        raise ConfigError("", "the configuration must be a mapping at the top level")
    tree = interpolate(raw, os.environ if env is None else env)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _RefError):
            path = ".".join([*(str(p) for p in err["loc"]), ctx_error.path])
            raise ConfigError(path, str(ctx_error)) from None
        path = ".".join(str(p) for p in err["loc"])
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        elif err["type"] in ("model_type", "model_attributes_type"):
            message = "must be a mapping"
        more = len(exc.errors()) - 1
        if more:
            message += f" (and {more} more error{'s' if more > 1 else ''})"
        raise ConfigError(path, message) from None


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load from ``path``, else ``$GATEWAY_CONFIG``, else the embedded default."""
    env = os.environ if env is None else env
    path = path or env.get("GATEWAY_CONFIG") or None
    if path is None:
        return parse(embedded_default(), env)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path} is not valid YAML: {exc}") from None
    return parse(raw if raw is not None else {}, env)
