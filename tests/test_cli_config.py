"""``gateway check-config FILE`` as a user runs it: a real subprocess, exit status, stdout and stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import config as cfg

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "example.yaml"
MINIMAL = ROOT / "config" / "minimal.yaml"

# Variables the example files read; the subprocess starts without any of them.
_CONFIG_VARS = (
    "GATEWAY_CONFIG", "GATEWAY_PORT", "REDIS_URL", "GATEWAY_ADMIN_KEY_SHA256", "WEB_APP_KEY", "BATCH_JOBS_KEY_SHA256",
    "BATCH_JOBS_WEBHOOK_SECRET", "OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY",
    "VLLM_BASE_URL", "GATEWAY_CLIENT_KEY",
)


def check_config(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in _CONFIG_VARS}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", *args],
        capture_output=True, text=True, timeout=30, cwd=ROOT, env={**clean, **env},
    )


def summary(config: cfg.Config) -> str:
    return (
        f"ok: {len(config.providers)} provider(s), {len(config.models)} model(s), {len(config.tiers)} tier(s), "
        f"{len(config.auth.clients)} client key(s)"
    )


def test_the_example_passes_with_no_environment() -> None:
    done = check_config(str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == summary(cfg.load(EXAMPLE, env={}))
    assert done.stdout.startswith("ok: 4 provider(s)")
    assert done.stderr == ""


def test_the_minimal_config_passes_with_its_variables() -> None:
    done = check_config(str(MINIMAL), GATEWAY_CLIENT_KEY="sk-app", OPENAI_API_KEY="sk-up")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok: 1 provider(s), 1 model(s), 1 tier(s), 1 client key(s)"


def test_an_unset_variable_fails_naming_the_key() -> None:
    done = check_config(str(MINIMAL), OPENAI_API_KEY="sk-up")
    assert done.returncode != 0
    assert done.stdout == ""
    assert "auth.clients.0.key" in done.stderr and "GATEWAY_CLIENT_KEY" in done.stderr
    assert "sk-up" not in done.stderr  # secrets that are set are not echoed


_VALID = """
providers:
  openai: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  chat: {targets: [{provider: openai, model: m}]}
tiers:
  standard: {priority: 0}
"""


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        (_VALID.replace('base_url: "http', 'max_concurency: 8, base_url: "http'), "providers.openai.max_concurency",
         "unknown key"),
        (_VALID.replace("{priority: 0}", "{priority: 0, hold: 3}"), "tiers.standard.hold", "unknown key"),
        (_VALID.replace("provider: openai", "provider: azure"), "models.chat.targets.0.provider",
         "unknown provider 'azure'"),
        (_VALID.replace("{priority: 0}", "{priority: -1}"), "tiers.standard.priority", "greater than or equal to 0"),
        (_VALID + "auth: {clients: [{name: a, key: k, tiers: [gold], default_tier: gold}]}\n", "auth.clients.0.tiers.0",
         "unknown tier 'gold'"),
        (_VALID + "auth: {admin_keys: [{name: a, key_sha256: abc}]}\n", "auth.admin_keys.0.key_sha256",
         "64 hex digits"),
    ],
    ids=["unknown-provider-key", "unknown-tier-key", "unknown-provider-ref", "negative", "unknown-tier-ref", "bad-digest"],
)
def test_an_invalid_file_fails_naming_the_key_path(tmp_path: Path, text: str, path: str, fragment: str) -> None:
    file = tmp_path / "gateway.yaml"
    file.write_text(text)
    done = check_config(str(file))
    assert done.returncode != 0
    assert done.stdout == ""
    assert f"{path}: " in done.stderr and fragment in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1  # one line that says what to fix


def test_a_file_that_is_valid_passes(tmp_path: Path) -> None:
    file = tmp_path / "gateway.yaml"
    file.write_text(_VALID)
    done = check_config(str(file))
    assert (done.returncode, done.stdout.strip()) == (0, "ok: 1 provider(s), 1 model(s), 1 tier(s), 0 client key(s)")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("providers: [unclosed\n", "is not valid YAML"),
        ("- a\n- b\n", "must be a mapping at the top level"),
        (None, "cannot read"),
    ],
    ids=["yaml-syntax", "list-at-top", "missing-file"],
)
def test_unreadable_or_malformed_files_fail_cleanly(tmp_path: Path, text: str | None, fragment: str) -> None:
    file = tmp_path / "gateway.yaml"
    if text is not None:
        file.write_text(text)
    done = check_config(str(file))
    assert done.returncode != 0
    assert fragment in done.stderr
    assert "Traceback" not in done.stderr


def test_the_file_argument_is_required() -> None:
    done = check_config()
    assert done.returncode != 0
    assert "file" in done.stderr
