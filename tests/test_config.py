"""The config loader: interpolation, strict keys with full paths, values, cross-references, defaults."""

from __future__ import annotations

import copy
import hashlib
import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from gateway import config as cfg
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "example.yaml"
MINIMAL = ROOT / "config" / "minimal.yaml"
DIGEST = hashlib.sha256(b"sk-admin").hexdigest()


def valid() -> dict[str, Any]:
    """A small config that validates; each test changes one thing."""
    return {
        "auth": {
            "admin_keys": [{"name": "oncall", "key_sha256": DIGEST}],
            "clients": [
                {"name": "web", "key": "sk-web", "tiers": ["interactive", "standard"], "default_tier": "interactive"},
            ],
        },
        "providers": {
            "openai": {"kind": "openai", "base_url": "https://api.openai.com/v1", "api_key": "sk-up"},
            "sim": {"kind": "simulator"},
        },
        "models": {"chat": {"targets": [{"provider": "openai", "model": "gpt-4.1-mini"}, {"provider": "sim", "model": "s"}]}},
        "tiers": {
            "interactive": {"priority": 0, "reserved_concurrency": 2},
            "standard": {"priority": 1, "deferrable": True, "hold_s": 5},
        },
    }


def put(tree: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Set ``value`` at a dotted path (list indices as numbers), creating mappings on the way."""
    *parents, last = dotted.split(".")
    node: Any = tree
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return tree


def drop(tree: dict[str, Any], dotted: str) -> dict[str, Any]:
    *parents, last = dotted.split(".")
    node: Any = tree
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    del node[last]
    return tree


def error_of(raw: Any, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        cfg.parse(raw, env or {})
    return info.value


def test_the_base_of_these_tests_is_valid() -> None:
    config = cfg.parse(valid(), {})
    assert config.tiers["standard"].hold_s == 5
    assert config.providers["openai"].max_concurrency == 64  # a default fills in


# Interpolation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${K}", {"K": "sk-1"}, "sk-1"),
        ("${K:-dflt}", {"K": "sk-1"}, "sk-1"),
        ("${K:-dflt}", {}, "dflt"),
        ("${K:-dflt}", {"K": ""}, "dflt"),  # like the shell: ":-" also covers set-but-empty
        ("${K:-}", {}, ""),
        ("${K}", {"K": ""}, ""),  # set but empty, no default: empty, not an error
        ("pre-${A}-${B:-b}-post", {"A": "a"}, "pre-a-b-post"),
        ("${K:-http://h:1/0}", {}, "http://h:1/0"),  # a default may hold colons and slashes
        ("${K}", {"K": "${OTHER}"}, "${OTHER}"),  # values are not expanded again
        ("${K}", {"K": "a: b\n- c"}, "a: b\n- c"),  # YAML in a secret stays a string
        ("$K and {K} and $ {K}", {"K": "x"}, "$K and {K} and $ {K}"),  # only ${...} is special
    ],
)
def test_interpolation(value: str, env: dict[str, str], expected: str) -> None:
    config = cfg.parse(put(valid(), "providers.openai.api_key", value), env)
    assert config.providers["openai"].api_key == expected


@pytest.mark.parametrize(
    ("dotted", "path"),
    [
        ("redis.url", "redis.url"),
        ("providers.openai.api_key", "providers.openai.api_key"),
        ("providers.openai.headers", "providers.openai.headers.X-Team"),
        ("auth.clients.0.key", "auth.clients.0.key"),
        ("auth.clients.0.tiers", "auth.clients.0.tiers.1"),
    ],
)
def test_unset_variable_without_default_names_the_key_path(dotted: str, path: str) -> None:
    values = {
        "providers.openai.headers": {"X-Team": "${MISSING_VAR}"},
        "auth.clients.0.tiers": ["interactive", "${MISSING_VAR}"],
    }
    err = error_of(put(valid(), dotted, values.get(dotted, "${MISSING_VAR}")))
    assert err.path == path
    assert "MISSING_VAR" in err.message and "not set" in err.message
    assert str(err).startswith(f"{path}: ")


def test_interpolated_strings_are_converted_to_the_key_type() -> None:
    raw = put(valid(), "server", {"port": "${PORT:-9000}", "access_log": "${ACCESS:-false}"})
    put(raw, "tiers.interactive.timeout_s", "${T}")
    config = cfg.parse(raw, {"T": "2.5"})
    assert (config.server.port, config.server.access_log) == (9000, False)
    assert config.tiers["interactive"].timeout_s == 2.5


def test_non_string_values_pass_through_interpolation() -> None:
    assert cfg.interpolate({"a": [1, 2.5, True, None]}, {}) == {"a": [1, 2.5, True, None]}


# Unknown keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "bogus",
        "server.hots",
        "redis.password",
        "auth.tokens",
        "auth.admin_keys.0.secret",
        "auth.clients.0.tier",
        "providers.openai.max_concurency",
        "providers.openai.circuit.threshold",
        "providers.sim.simulator.latency",
        "models.chat.fallbacks",
        "models.chat.targets.1.weight",
        "models.chat.pricing.input_per_token",
        "tiers.standard.hold",
        "tiers.interactive.timeout",
        "queue.batch_size",
        "queue.visiblity_timeout_s",
        "auth.clients.0.callback_host",
        "degradation.enter.p99_latency_s",
        "degradation.exit.hold",
    ],
)
def test_unknown_key_is_reported_with_its_full_path(path: str) -> None:
    raw = valid()
    if path.startswith("degradation."):
        thresholds = {"p95_latency_s": 1.0, "rate_limited_ratio": 0.1, "error_ratio": 0.1}
        raw["degradation"] = {"enter": dict(thresholds), "exit": dict(thresholds)}
    err = error_of(put(raw, path, 1))
    assert (err.path, err.message) == (path, "unknown key")
    assert str(err) == f"{path}: unknown key"


def test_the_tier_key_async_reaches_async_() -> None:
    assert cfg.parse(put(valid(), "tiers.standard.async", True), {}).tiers["standard"].async_ is True


# Invalid values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        ("server.port", -1, "greater than or equal to 0"),
        ("server.port", 70000, "less than or equal to 65535"),
        ("server.port", "http", "valid integer"),
        ("server.max_body_bytes", 0, "greater than 0"),
        ("server.log_level", "verbose", "'debug', 'info', 'warning' or 'error'"),
        ("server.log_format", "xml", "'auto', 'json' or 'text'"),
        ("server.access_log", "sometimes", "valid boolean"),
        ("redis.private", "maybe", "'auto', 'always' or 'never'"),
        ("providers.openai.kind", "gemini", "'openai', 'anthropic' or 'simulator'"),
        ("providers.openai.max_concurrency", 0, "greater than or equal to 1"),
        ("providers.openai.max_concurrency", 1.5, "fractional part"),
        ("providers.openai.headers", ["X-A: 1"], "valid dictionary"),
        ("providers.openai.headers.X-A", 1, "valid string"),
        ("providers.openai.circuit.cooldown_s", 0, "greater than 0"),
        ("providers.sim.simulator.error_ratio", 1.5, "less than or equal to 1"),
        ("providers.sim.simulator.latency_ms", -5, "greater than or equal to 0"),
        ("models.chat.targets", [], "at least 1 item"),
        ("models.chat.pricing.batch_discount", 2, "less than or equal to 1"),
        ("models.chat.pricing.input_per_mtok", -0.1, "greater than or equal to 0"),
        ("tiers.interactive.priority", -1, "greater than or equal to 0"),
        ("tiers.interactive.reserved_concurrency", -2, "greater than or equal to 0"),
        ("tiers.interactive.timeout_s", 0, "greater than 0"),
        ("tiers.interactive.timeout_s", "soon", "valid number"),
        ("tiers.interactive.first_byte_timeout_s", -1, "greater than 0"),
        ("tiers.interactive.connect_timeout_s", 0, "greater than 0"),
        ("tiers.interactive.admission_timeout_s", -0.5, "greater than or equal to 0"),
        ("tiers.interactive.retries", -1, "greater than or equal to 0"),
        ("tiers.standard.hold_s", -3, "greater than or equal to 0"),
        ("tiers.standard.async", "perhaps", "valid boolean"),
        ("tiers.standard.max_delay_s", 0, "greater than 0"),
        ("queue.mini_batch_size", 0, "greater than or equal to 1"),
        ("queue.mini_batch_wait_s", -1, "greater than or equal to 0"),
        ("queue.max_attempts", 0, "greater than or equal to 1"),
        ("queue.visibility_timeout_s", 0, "greater than 0"),
        ("queue.result_ttl_s", 59, "greater than or equal to 60"),
        ("queue.namespace", "gw:{x}", "should match pattern"),
        ("providers.openai.rpm", 0, "greater than or equal to 1"),
        ("providers.openai.tpm", "lots", "valid integer"),
        ("auth.clients.0.callback_hosts", "hooks.example.com", "valid list"),
        ("degradation.window_s", 0, "greater than 0"),
        ("degradation.min_samples", 0, "greater than or equal to 1"),
        ("auth.clients.0.tiers", [], "at least 1 item"),
        ("auth.clients.0.tiers", "interactive", "valid list"),
        ("providers", {}, "at least 1 item"),
        ("tiers", ["interactive"], "valid dictionary"),
    ],
)
def test_invalid_value_is_reported_at_its_path(path: str, value: Any, fragment: str) -> None:
    err = error_of(put(valid(), path, value))
    assert err.path == path
    assert fragment in err.message


@pytest.mark.parametrize("path", ["server", "redis", "auth", "queue", "degradation", "providers.sim", "tiers.standard",
                                  "models.chat.pricing", "providers.openai.circuit"])
def test_a_section_that_is_not_a_mapping_says_so(path: str) -> None:
    err = error_of(put(valid(), path, "oops"))
    assert (err.path, err.message) == (path, "must be a mapping")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("providers", "required key is missing (and 1 more error)"),  # models then refer to nothing
        ("models", "required key is missing"),
        ("tiers", "required key is missing"),
        ("tiers.standard.priority", "required key is missing"),
        ("models.chat.targets", "required key is missing"),
        ("models.chat.targets.0.model", "required key is missing"),
        ("providers.openai.kind", "required key is missing"),
        ("auth.clients.0.name", "required key is missing"),
        ("auth.clients.0.default_tier", "required key is missing"),
    ],
)
def test_a_missing_required_key_is_named(path: str, message: str) -> None:
    err = error_of(drop(valid(), path))
    assert err.path == path
    assert err.message.startswith("required key is missing")


def test_degradation_thresholds_must_be_given_whole() -> None:
    err = error_of(put(valid(), "degradation.enter", {"p95_latency_s": 5}))
    assert err.path == "degradation.enter.rate_limited_ratio"
    assert err.message == "required key is missing (and 1 more error)"


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_remote_providers_need_a_base_url(kind: str) -> None:
    for base_url in (None, ""):
        provider: dict[str, Any] = {"kind": kind}
        if base_url is not None:
            provider["base_url"] = base_url
        err = error_of(put(valid(), "providers.openai", provider))
        assert err.path == "providers.openai.base_url"
        assert "needs base_url" in err.message


def test_a_simulator_needs_no_base_url_or_key() -> None:
    assert cfg.parse(valid(), {}).providers["sim"].base_url is None


# Cross-references -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "error_path", "fragment"),
    [
        ("models.chat.targets.0.provider", "azure", "models.chat.targets.0.provider", "unknown provider 'azure'"),
        ("models.chat.targets.1.provider", "nope", "models.chat.targets.1.provider", "unknown provider 'nope'"),
        ("auth.clients.0.tiers", ["interactive", "gold"], "auth.clients.0.tiers.1", "unknown tier 'gold'"),
        ("auth.clients.0.tiers", ["gold"], "auth.clients.0.default_tier", "'interactive' is not in"),
        ("auth.clients.0.default_tier", "standard", None, None),
        ("auth.clients.0.default_tier", "background", "auth.clients.0.default_tier", "'background' is not in"),
    ],
)
def test_cross_references(path: str, value: Any, error_path: str | None, fragment: str | None) -> None:
    raw = put(valid(), path, value)
    if error_path is None:
        cfg.parse(raw, {})
        return
    err = error_of(raw)
    assert err.path == error_path
    assert fragment is not None and fragment in err.message


def test_a_default_tier_that_no_tier_defines_is_reported_against_the_tiers() -> None:
    raw = put(valid(), "auth.clients.0.tiers", ["interactive", "gold"])
    put(raw, "auth.clients.0.default_tier", "gold")
    err = error_of(raw)
    assert (err.path, err.message) == ("auth.clients.0.tiers.1", "unknown tier 'gold'")


def test_the_second_client_is_named_by_its_index() -> None:
    raw = valid()
    raw["auth"]["clients"].append({"name": "b", "key": "sk-b", "tiers": ["standard", "ghost"], "default_tier": "standard"})
    assert error_of(raw).path == "auth.clients.1.tiers.1"


# key vs key_sha256 ------------------------------------------------------------------------------

_KEY_CASES = [
    ({"key": "sk-1"}, None, None),
    ({"key_sha256": DIGEST}, None, None),
    ({"key_sha256": DIGEST.upper()}, None, None),
    ({}, "key", "exactly one of key or key_sha256"),
    ({"key": "sk-1", "key_sha256": DIGEST}, "key", "exactly one of key or key_sha256"),
    ({"key": ""}, "key", "exactly one of key or key_sha256"),
    ({"key": "${UNSET_KEY:-}"}, "key", "exactly one of key or key_sha256"),
    ({"key": None, "key_sha256": None}, "key", "exactly one of key or key_sha256"),
    ({"key_sha256": DIGEST[:-1]}, "key_sha256", "64 hex digits"),
    ({"key_sha256": "g" * 64}, "key_sha256", "64 hex digits"),
    ({"key_sha256": DIGEST + "0"}, "key_sha256", "64 hex digits"),
]


@pytest.mark.parametrize("where", ["auth.admin_keys.0", "auth.clients.0"])
@pytest.mark.parametrize(("fields", "bad_key", "fragment"), _KEY_CASES)
def test_key_rules(where: str, fields: dict[str, Any], bad_key: str | None, fragment: str | None) -> None:
    raw = valid()
    entry = {"name": "x", **fields}
    if where == "auth.clients.0":
        entry.update(tiers=["standard"], default_tier="standard")
    put(raw, where, entry)
    if bad_key is None:
        config = cfg.parse(raw, {})
        parsed = (config.auth.admin_keys if "admin" in where else config.auth.clients)[0]
        assert (parsed.key, parsed.key_sha256) == (fields.get("key"), fields.get("key_sha256"))
        return
    err = error_of(raw)
    assert err.path == f"{where}.{bad_key}"
    assert fragment is not None and fragment in err.message


# Whole files, the embedded default and GATEWAY_CONFIG -------------------------------------------


def test_the_embedded_default() -> None:
    config = cfg.load(None, env={})
    assert list(config.models) == ["sim-1"]
    assert config.models["sim-1"].targets[0].provider == "simulator"
    assert config.providers["simulator"].kind == "simulator"
    assert set(config.tiers) == {"interactive", "standard", "background"}
    assert config.tiers["background"].async_ and config.tiers["standard"].deferrable
    assert config.top_priority == 0
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.redis.url == cfg.DEFAULT_REDIS_URL == "redis://127.0.0.1:6379/0"
    assert config.auth.clients == [] and config.auth.admin_keys == []


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({"REDIS_URL": "redis://10.0.0.5:6380/3"}, "redis://10.0.0.5:6380/3"),
        ({"REDIS_URL": ""}, cfg.DEFAULT_REDIS_URL),
        ({"GATEWAY_CONFIG": ""}, cfg.DEFAULT_REDIS_URL),  # empty GATEWAY_CONFIG means unset
    ],
)
def test_the_embedded_default_takes_redis_from_redis_url(env: dict[str, str], url: str) -> None:
    assert cfg.load(None, env=env).redis.url == url


def test_load_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://from-env:1/0")
    assert cfg.load().redis.url == "redis://from-env:1/0"


def _write(tmp_path: Path, text: str, name: str = "gw.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


MINI_TEXT = """
providers: {up: {kind: openai, base_url: "http://127.0.0.1:9/v1", api_key: "${UP_KEY:-none}"}}
models: {from-file: {targets: [{provider: up, model: m}]}}
tiers: {only: {priority: 0}}
"""


def test_gateway_config_is_honoured(tmp_path: Path) -> None:
    path = _write(tmp_path, MINI_TEXT)
    config = cfg.load(None, env={"GATEWAY_CONFIG": str(path), "UP_KEY": "sk-env"})
    assert list(config.models) == ["from-file"]
    assert config.providers["up"].api_key == "sk-env"


def test_an_explicit_path_wins_over_gateway_config(tmp_path: Path) -> None:
    chosen = _write(tmp_path, MINI_TEXT)
    other = _write(tmp_path, "this: [is not used", "other.yaml")
    assert list(cfg.load(chosen, env={"GATEWAY_CONFIG": str(other)}).models) == ["from-file"]


def test_a_secret_with_yaml_syntax_does_not_change_the_structure(tmp_path: Path) -> None:
    path = _write(tmp_path, MINI_TEXT)
    sneaky = "x\nmodels: {evil: {targets: []}}"
    config = cfg.load(path, env={"UP_KEY": sneaky})
    assert config.providers["up"].api_key == sneaky
    assert list(config.models) == ["from-file"]


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ("providers: {a: {kind: simulator}\nmodels: x\n", "", "is not valid YAML"),
        ("tiers:\n  a: 1\n b: 2\n", "", "is not valid YAML"),
        ("key: [unclosed\n", "", "is not valid YAML"),
        ("- providers\n- models\n", "", "must be a mapping at the top level"),
        ("just a string\n", "", "must be a mapping at the top level"),
        ("42\n", "", "must be a mapping at the top level"),
        ("", "providers", "required key is missing"),
        ("# only a comment\n", "providers", "required key is missing"),
        (MINI_TEXT + "extra: 1\n", "extra", "unknown key"),
        (MINI_TEXT.replace("{priority: 0}", "{priority: 0, hold: 3}"), "tiers.only.hold", "unknown key"),
    ],
    ids=["unclosed-flow", "bad-indent", "unclosed-list", "list", "string", "number", "empty", "comment-only",
         "unknown-top-key", "unknown-tier-key"],
)
def test_bad_files(tmp_path: Path, text: str, path: str, fragment: str) -> None:
    file = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        cfg.load(file, env={})
    assert info.value.path == path
    assert fragment in info.value.message
    if "YAML" in fragment:
        assert str(file) in info.value.message  # says which file, and the YAML error says where in it


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="cannot read .*nope.yaml"):
        cfg.load(missing, env={})
    with pytest.raises(ConfigError, match="cannot read"):
        cfg.load(None, env={"GATEWAY_CONFIG": str(missing)})
    with pytest.raises(ConfigError, match="cannot read"):
        cfg.load(tmp_path, env={})  # a directory


def test_the_first_of_several_errors_is_named_and_the_rest_counted() -> None:
    raw = put(valid(), "server.port", -1)
    put(raw, "server.hots", "x")
    put(raw, "queue.mini_batch_size", 0)
    err = error_of(raw)
    assert err.path == "server.port"
    assert err.message.endswith("(and 2 more errors)")


# The shipped example files ----------------------------------------------------------------------

_EXAMPLE_ENV_VARS = (
    "GATEWAY_PORT", "REDIS_URL", "GATEWAY_ADMIN_KEY_SHA256", "WEB_APP_KEY", "BATCH_JOBS_KEY_SHA256",
    "OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "VLLM_BASE_URL",
    "BATCH_JOBS_WEBHOOK_SECRET",
)


def test_example_loads_with_no_environment() -> None:
    config = cfg.load(EXAMPLE, env={})
    assert {p.kind for p in config.providers.values()} == {"openai", "anthropic", "simulator"}
    assert config.providers["openai"].api_key == ""
    assert config.server.port == 8080
    assert set(config.tiers) == {"interactive", "standard", "background"}
    assert config.tiers["background"].async_


def test_example_takes_its_secrets_from_the_environment() -> None:
    env = {name: f"value-of-{name}" for name in _EXAMPLE_ENV_VARS}
    env.update(GATEWAY_PORT="9999", GATEWAY_ADMIN_KEY_SHA256=DIGEST, BATCH_JOBS_KEY_SHA256=DIGEST)
    config = cfg.load(EXAMPLE, env=env)
    assert config.server.port == 9999
    assert config.providers["openai"].api_key == "value-of-OPENAI_API_KEY"
    assert config.providers["claude"].base_url == "value-of-ANTHROPIC_BASE_URL"
    assert config.auth.admin_keys[0].key_sha256 == DIGEST
    assert config.auth.clients[0].key == "value-of-WEB_APP_KEY"
    assert config.auth.clients[1].webhook_secret == "value-of-BATCH_JOBS_WEBHOOK_SECRET"


def _field_annotations(model: type[BaseModel]) -> dict[str, Any]:
    return {(f.alias or name): f.annotation for name, f in model.model_fields.items()}


def _models_in(annotation: Any) -> tuple[str, type[BaseModel]] | None:
    """("one" | "each", model) for Model, dict[str, Model] and list[Model] annotations."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "one", annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict and isinstance(args[1], type) and issubclass(args[1], BaseModel):
        return "each", args[1]
    if origin is list and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return "each", args[0]
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            found = _models_in(arg)
            if found:
                return found
    return None


def _missing_keys(model: type[BaseModel], nodes: list[Any], path: str) -> list[str]:
    missing = []
    for key, annotation in _field_annotations(model).items():
        present = [n[key] for n in nodes if isinstance(n, dict) and key in n]
        here = f"{path}.{key}" if path else key
        if not present:
            missing.append(here)
            continue
        nested = _models_in(annotation)
        if nested is None:
            continue
        how, sub = nested
        children = present if how == "one" else [c for p in present for c in (p.values() if isinstance(p, dict) else p)]
        missing += _missing_keys(sub, children, here + ("" if how == "one" else ".*"))
    return missing


# An admin ``key`` would need a default that is a known admin key; the example shows
# ``key`` on a client and explains the key / key_sha256 choice at the admin entry.
_NOT_IN_EXAMPLE = {"auth.admin_keys.*.key"}


def test_example_shows_every_key_the_loader_accepts() -> None:
    # Fails when a key is added to gateway/config.py and not to config/example.yaml.
    raw = yaml.safe_load(EXAMPLE.read_text())
    assert set(_missing_keys(cfg.Config, [raw], "")) - _NOT_IN_EXAMPLE == set()


def test_every_key_in_the_example_has_a_comment() -> None:
    # A key is documented by a comment on its line or on the lines just above it,
    # or, inside a repeated entry (a second client, tier, provider), by its first use.
    lines = EXAMPLE.read_text().splitlines()
    documented: set[str] = set()
    undocumented = []
    for i, line in enumerate(lines):
        code = line.split(" #", 1)[0]
        match = re.match(r"\s*(?:- )?([A-Za-z_][A-Za-z0-9_-]*):", code)
        if not match or line.lstrip().startswith("#"):
            continue
        key = match.group(1)
        above = lines[i - 1].lstrip() if i else ""
        if " #" in line or above.startswith("#") or key in documented:
            documented.add(key)
        else:
            undocumented.append(f"{i + 1}: {line.strip()}")
    assert undocumented == []


def test_minimal_loads_when_its_two_variables_are_set() -> None:
    config = cfg.load(MINIMAL, env={"GATEWAY_CLIENT_KEY": "sk-app", "OPENAI_API_KEY": "sk-up"})
    assert list(config.models) == ["chat"]
    assert config.providers["openai"].base_url == "https://api.openai.com/v1"
    assert config.auth.clients[0].key == "sk-app"


@pytest.mark.parametrize(
    ("env", "path"),
    [
        ({"OPENAI_API_KEY": "sk-up"}, "auth.clients.0.key"),
        ({"GATEWAY_CLIENT_KEY": "sk-app"}, "providers.openai.api_key"),
    ],
)
def test_minimal_names_the_key_whose_variable_is_unset(env: dict[str, str], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg.load(MINIMAL, env=env)
    assert info.value.path == path


def test_config_is_immutable() -> None:
    config = cfg.parse(valid(), {})
    with pytest.raises(Exception, match="frozen"):
        config.server.port = 1  # type: ignore[misc]
    assert copy.deepcopy(config) == config
