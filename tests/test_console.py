"""``gateway mode`` and ``gateway status`` as a responder runs them: real subprocesses against a live gateway."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import time

import pytest

from gateway.console import parse_ttl
from tests.conftest import ADMIN_KEY, CLIENT_KEY
from tests.support.modes import admin, audit, chat, degradation_config, modes, wait_for
from tests.support.sdk import assert_openai_error


@pytest.mark.parametrize(
    "text,seconds",
    [("90", 90), ("90s", 90), ("2s", 2), ("0.5s", 0.5), ("30m", 1800), ("2h", 7200), ("1.5h", 5400), ("1d", 86400),
     (" 45s ", 45)],
)
def test_parse_ttl(text, seconds):
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "0", "0s", "-5s", "5x", "5 s", "5ms", "1.2.3s", "1e3", "forever", "5sm"])
def test_parse_ttl_refuses(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_ttl(text)


@pytest.fixture(scope="module")
def gateway(make_module_gateway, upstream_server, redis_server):
    config = degradation_config(upstream_server, redis_server.url, min_samples=1000)  # operator control only
    config["tiers"]["bulk"] = {"priority": 3, "timeout_s": 5, "retries": 0, "admission_timeout_s": 0.2}
    config["auth"]["clients"][0]["tiers"].append("bulk")
    return make_module_gateway(config)


@pytest.fixture(autouse=True)
def _clear_overrides(request, upstream):
    """A healthy upstream before each test (``upstream`` resets it), and no overrides after it."""
    yield
    if "gateway" in request.fixturenames:
        gw = request.getfixturevalue("gateway")
        for scope in ("global", "primary", "secondary"):
            admin(gw, "DELETE", "/admin/mode", json={"provider": scope})


def cli(*args: str, url: str | None = None, key: str | None = ADMIN_KEY, stdout=None, **env: str):
    """Run ``gateway ARGS`` with GATEWAY_URL / GATEWAY_ADMIN_KEY set as a responder would."""
    clean = {k: v for k, v in os.environ.items() if k not in ("GATEWAY_URL", "GATEWAY_ADMIN_KEY", "NO_COLOR")}
    if url is not None:
        clean["GATEWAY_URL"] = url
    if key is not None:
        clean["GATEWAY_ADMIN_KEY"] = key
    clean.update(env)
    return subprocess.run([sys.executable, "-m", "gateway", *args], env=clean, text=True, timeout=30,
                          stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE)


def rows(table: str) -> dict[str, list[str]]:
    """A printed table as {first cell: cells}, split on runs of two or more spaces."""
    out = {}
    for line in table.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells and cells[0]:
            out[cells[0]] = cells
    return out


def test_a_drill_override_defers_standard_work_until_its_ttl_ends(gateway):
    done = cli("mode", "set", "degraded", "--ttl", "2s", "--reason", "drill", url=gateway.url)
    assert done.returncode == 0, done.stderr
    table = rows(done.stdout)
    assert table["SCOPE"] == ["SCOPE", "MODE", "SOURCE", "REASON", "ACTOR", "TTL LEFT"]
    assert table["global"][:5] == ["global", "degraded", "operator", "drill", "oncall"]
    assert table["global"][5] in ("0s", "1s", "2s")
    assert table["primary"][:3] == ["primary", "normal", "auto"]
    override = modes(gateway)["scopes"]["global"]["override"]
    assert override["expires_at"] - override["set_at"] == pytest.approx(2.0)

    # While it lasts: standard work is deferred, interactive work stays synchronous.
    r = chat(gateway, tier="standard")
    assert r.status_code == 200 and r.headers["x-gateway-deferred"] == "true"
    assert r.headers["x-gateway-mode"] == "degraded"
    r = chat(gateway, tier="standard", prefer_async=True)
    assert r.status_code == 202 and r.json()["status"] in ("queued", "running", "succeeded")
    r = chat(gateway)
    assert r.status_code == 200 and "x-gateway-deferred" not in r.headers
    assert r.headers["x-gateway-mode"] == "degraded"

    # Then it ends by itself, not before its TTL, and standard work is synchronous again.
    wait_for(lambda: chat(gateway, tier="standard").headers["x-gateway-mode"] == "normal", 4, "the TTL to end")
    assert time.time() >= override["expires_at"]
    r = chat(gateway, tier="standard")
    assert r.status_code == 200 and "x-gateway-deferred" not in r.headers
    shown = cli("mode", "show", url=gateway.url)
    assert rows(shown.stdout)["global"][:3] == ["global", "normal", "auto"]
    drill = [e for e in audit(gateway) if e["reason"] == "drill"]
    assert [(e["scope"], e["from"], e["to"], e["source"], e["actor"]) for e in drill] == [
        ("global", "normal", "degraded", "operator", "oncall")]
    expired = wait_for(lambda: [e for e in audit(gateway) if e["reason"] == "override expired"
                                and e["scope"] == "global"], 2, "the expiry in the audit log")
    assert (expired[-1]["from"], expired[-1]["to"], expired[-1]["actor"]) == ("degraded", "normal", "oncall")


def test_shed_leaves_only_the_top_tier_synchronous_and_clear_restores_automatic_control(gateway):
    done = cli("mode", "set", "shed", "--reason", "provider incident", url=gateway.url)
    assert done.returncode == 0, done.stderr
    assert rows(done.stdout)["global"][:6] == ["global", "shed", "operator", "provider incident", "oncall", "-"]

    r = chat(gateway)  # interactive: priority 0, the top tier
    assert r.status_code == 200 and r.headers["x-gateway-mode"] == "shed" and "x-gateway-deferred" not in r.headers
    r = chat(gateway, tier="standard")  # deferrable: held on the queue
    assert r.status_code == 200 and r.headers["x-gateway-deferred"] == "true"
    r = chat(gateway, tier="bulk")  # neither top nor deferrable: refused
    assert_openai_error(r, 503, code="load_shed")
    r = chat(gateway, tier="background", key="sk-test-batch")  # async anyway
    assert r.status_code == 202

    done = cli("mode", "clear", "--reason", "incident over", url=gateway.url)
    assert done.returncode == 0, done.stderr
    assert rows(done.stdout)["global"][:3] == ["global", "normal", "auto"]
    r = chat(gateway, tier="standard")
    assert r.status_code == 200 and r.headers["x-gateway-mode"] == "normal" and "x-gateway-deferred" not in r.headers
    r = chat(gateway, tier="bulk")
    assert r.status_code == 200
    records = [(e["from"], e["to"], e["reason"]) for e in audit(gateway)
               if e["reason"] in ("provider incident", "incident over")]
    assert records == [("normal", "shed", "provider incident"), ("shed", "normal", "incident over")]


def test_a_provider_scoped_override_and_json_output(gateway):
    done = cli("mode", "set", "degraded", "--provider", "primary", "--ttl", "10m", "--reason", "slow region",
               "--json", url=gateway.url)
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    primary = view["scopes"]["primary"]
    assert (primary["mode"], primary["source"], primary["override"]["reason"]) == ("degraded", "operator",
                                                                                   "slow region")
    assert 590 < primary["override"]["ttl_remaining_s"] <= 600
    assert view["scopes"]["global"]["mode"] == "normal"
    assert view["models"]["chat"] == "degraded"
    done = cli("mode", "clear", "--provider", "primary", "--json", url=gateway.url)
    assert json.loads(done.stdout)["scopes"]["primary"]["source"] == "auto"


def test_status_prints_a_readable_summary(gateway):
    chat(gateway)
    done = cli("status", url=gateway.url)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("gateway ") and "redis ok" in out and "automatic on" in out
    table = rows(out)
    assert table["global"][:3] == ["global", "normal", "auto"]
    lines = out.splitlines()
    assert any(line.split() == ["PROVIDER", "SAMPLES", "P95", "S", "429", "RATIO", "ERROR", "RATIO", "CIRCUITS"]
               for line in lines)
    assert any(line.startswith("primary") and "p-chat=closed" in line for line in lines)
    assert any(line.split()[:5] == ["PROVIDER", "TIER", "IN", "FLIGHT", "RESERVED"] for line in lines)
    assert "enter at p95 > 0.5s, 429 ratio > 0.2, error ratio > 0.5" in out
    assert table["TIER"] == ["TIER", "QUEUED", "OLDEST S"]
    assert {"interactive", "standard", "background"} <= set(table)
    assert "\x1b[" not in out  # no colour into a pipe
    for secret in (ADMIN_KEY, CLIENT_KEY, "sk-upstream"):
        assert secret not in out


def test_status_json_is_the_api_answer(gateway):
    done = cli("status", "--json", url=gateway.url)
    assert done.returncode == 0, done.stderr
    s = json.loads(done.stdout)
    assert s["redis"] == "ok" and s["modes"]["global"]["mode"] == "normal"
    assert set(s) >= {"version", "controller", "modes", "health", "circuits", "admission", "queue", "thresholds"}


def test_flags_win_over_the_environment(gateway):
    done = cli("mode", "show", "--url", gateway.url, "--admin-key", ADMIN_KEY, url="http://127.0.0.1:9", key="wrong")
    assert done.returncode == 0, done.stderr
    assert "global" in rows(done.stdout)


def test_colour_on_a_terminal(gateway):
    admin(gateway, "PUT", "/admin/mode", json={"mode": "degraded", "reason": "colour check"})
    leader, follower = pty.openpty()
    try:
        done = cli("mode", "show", url=gateway.url, stdout=follower)
        os.close(follower)
        follower = -1
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the writer is gone
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert done.returncode == 0, done.stderr
    text = out.decode()
    assert "\x1b[33mdegraded\x1b[0m" in text and "\x1b[32mnormal\x1b[0m" in text
    plain = cli("mode", "show", url=gateway.url, NO_COLOR="1")
    assert "\x1b[" not in plain.stdout


@pytest.mark.parametrize(
    "args,key,message",
    [
        (("mode", "show"), "sk-wrong", "401"),
        (("status",), CLIENT_KEY, "401"),  # a client key is not an admin key
        (("mode", "set", "degraded"), ADMIN_KEY, "--reason"),
        (("mode", "set", "panic", "--reason", "r"), ADMIN_KEY, "needs MODE"),
        (("mode", "set", "shed", "--ttl", "soon", "--reason", "r"), ADMIN_KEY, "not a duration"),
        (("mode", "set", "shed", "--provider", "nope", "--reason", "r"), ADMIN_KEY, "404"),
    ],
)
def test_refusals_exit_non_zero_and_change_nothing(gateway, args, key, message):
    before = len(audit(gateway, 1000))
    done = cli(*args, url=gateway.url, key=key)
    assert done.returncode != 0
    assert message in done.stderr and done.stdout == ""
    assert "Traceback" not in done.stderr
    assert modes(gateway)["scopes"]["global"]["mode"] == "normal"
    assert len(audit(gateway, 1000)) == before


def test_an_unreachable_gateway_is_one_clear_line():
    done = cli("status", url="http://127.0.0.1:9")
    assert done.returncode != 0
    assert "cannot reach http://127.0.0.1:9" in done.stderr and "Traceback" not in done.stderr
