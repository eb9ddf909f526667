"""The admin API against a live gateway: modes (show, override, clear), status, audit, and who may use them.

One gateway serves the module; every test clears the overrides it set, and tells
its audit records apart by a reason of its own.
"""

from __future__ import annotations

import secrets
import socket
import time

import httpx
import pytest

from tests.conftest import ADMIN_KEY, BATCH_KEY, CLIENT_KEY
from tests.support.modes import admin, audit, chat, degradation_config, modes, wait_for
from tests.support.sdk import assert_openai_error, metric

SCOPES = ("global", "primary", "secondary")


@pytest.fixture(scope="module")
def gateway(make_module_gateway, upstream_server, redis_server):
    config = degradation_config(upstream_server, redis_server.url, min_samples=1000)  # no automatic surprises
    config["models"]["second"] = {"targets": [{"provider": "secondary", "model": "s-second"}]}
    config["tiers"]["bulk"] = {"priority": 3, "timeout_s": 5, "retries": 0, "admission_timeout_s": 0.2}
    config["auth"]["clients"][0]["tiers"].append("bulk")
    return make_module_gateway(config)


@pytest.fixture(autouse=True)
def _clear_overrides(request, upstream):
    """A healthy upstream before each test (``upstream`` resets it), and no overrides after it."""
    yield
    if "gateway" in request.fixturenames:
        gw = request.getfixturevalue("gateway")
        for scope in SCOPES:
            admin(gw, "DELETE", "/admin/mode", json={"provider": scope, "reason": "test cleanup"})


def reason() -> str:
    return "test " + secrets.token_hex(4)


def put(gw, **body):
    return admin(gw, "PUT", "/admin/mode", json=body)


def test_get_mode_shows_every_scope(gateway, upstream):
    view = modes(gateway)
    assert set(view) >= {"scopes", "models", "automatic", "shared"}
    assert set(view["scopes"]) == set(SCOPES)
    for scope in SCOPES:
        item = view["scopes"][scope]
        assert item["mode"] == "normal" and item["source"] == "auto" and item["override"] is None
        assert item["auto"]["mode"] == "normal"
    assert view["models"] == {"chat": "normal", "embed": "normal", "second": "normal"}
    assert view["automatic"] is True
    wait_for(lambda: modes(gateway)["shared"], 3, "the controller reaching Redis")


@pytest.mark.parametrize("method,path", [("GET", "/admin/mode"), ("PUT", "/admin/mode"), ("DELETE", "/admin/mode"),
                                         ("GET", "/admin/status"), ("GET", "/admin/audit")])
@pytest.mark.parametrize("key", [None, CLIENT_KEY, BATCH_KEY, "sk-wrong"])
def test_admin_endpoints_need_an_admin_key(gateway, method, path, key):
    body = {"mode": "shed", "reason": "not allowed"} if method == "PUT" else None
    r = admin(gateway, method, path, key=key, json=body)
    assert_openai_error(r, 401, type_="authentication_error")
    assert r.headers["x-should-retry"] == "false"
    assert modes(gateway)["scopes"]["global"]["mode"] == "normal"  # nothing changed


@pytest.mark.parametrize(
    "body,param",
    [
        ({"mode": "degraded"}, "reason"),  # the reason is required
        ({"mode": "degraded", "reason": ""}, "reason"),
        ({"mode": "degraded", "reason": "x" * 501}, "reason"),
        ({"mode": "panic", "reason": "r"}, "mode"),
        ({"reason": "r"}, "mode"),
        ({"mode": "shed", "reason": "r", "ttl_s": 0}, "ttl_s"),
        ({"mode": "shed", "reason": "r", "ttl_s": -5}, "ttl_s"),
        ({"mode": "shed", "reason": "r", "ttl_s": "soon"}, "ttl_s"),
        ({"mode": "shed", "reason": "r", "until": 5}, "until"),  # unknown fields are refused
    ],
)
def test_put_refuses_bad_bodies(gateway, body, param):
    r = put(gateway, **body)
    error = assert_openai_error(r, 400, type_="invalid_request_error")
    assert error["param"] == param
    assert param in error["message"]
    assert modes(gateway)["scopes"]["global"]["mode"] == "normal"


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'"degraded"'])
def test_put_refuses_what_is_not_a_json_object(gateway, content):
    r = httpx.put(gateway.url + "/admin/mode", content=content, timeout=10,
                  headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"})
    assert_openai_error(r, 400, code="invalid_json")


def test_an_unknown_provider_is_404(gateway):
    r = put(gateway, mode="shed", provider="nope", reason="r")
    error = assert_openai_error(r, 404, code="provider_not_found")
    assert error["param"] == "provider"
    r = admin(gateway, "DELETE", "/admin/mode", params={"provider": "nope"})
    assert_openai_error(r, 404, code="provider_not_found")


def test_a_global_override_wins_until_cleared(gateway, upstream):
    why = reason()
    before = metric(gateway, "gateway_mode_transitions_total", scope="global", from_mode="normal", to_mode="shed",
                    source="operator")
    r = put(gateway, mode="shed", ttl_s=600, reason=why)
    assert r.status_code == 200, r.text
    item = r.json()["scopes"]["global"]
    assert (item["mode"], item["source"]) == ("shed", "operator")
    assert item["auto"]["mode"] == "normal"  # the controller's own view is kept, and comes back on clear
    o = item["override"]
    assert o["mode"] == "shed" and o["reason"] == why and o["actor"] == "oncall"
    assert 590 < o["ttl_remaining_s"] <= 600 and o["expires_at"] - o["set_at"] == pytest.approx(600)
    assert r.json()["models"] == {"chat": "shed", "embed": "shed", "second": "shed"}
    shown = modes(gateway)  # GET shows what PUT answered
    assert shown["models"] == r.json()["models"] and shown["scopes"]["global"]["override"]["reason"] == why

    # Every response says so; only the top tier stays synchronous.
    r = chat(gateway)
    assert r.status_code == 200 and r.headers["x-gateway-mode"] == "shed"
    assert "x-gateway-deferred" not in r.headers
    r = chat(gateway, tier="bulk")
    assert_openai_error(r, 503, code="load_shed")
    assert r.headers["x-gateway-mode"] == "shed"
    r = chat(gateway, tier="standard", prefer_async=True)
    assert r.status_code == 202 and r.headers["x-gateway-mode"] == "shed"
    assert metric(gateway, "gateway_mode", scope="global", mode="shed") == 1
    assert metric(gateway, "gateway_mode", scope="global", mode="normal") == 0

    r = admin(gateway, "DELETE", "/admin/mode", json={"reason": why + " over"})
    assert r.status_code == 200, r.text
    item = r.json()["scopes"]["global"]
    assert (item["mode"], item["source"], item["override"]) == ("normal", "auto", None)
    r = chat(gateway, tier="standard")
    assert r.status_code == 200 and r.headers["x-gateway-mode"] == "normal"
    assert "x-gateway-deferred" not in r.headers

    mine = [e for e in audit(gateway) if e["reason"] in (why, why + " over")]
    assert [(e["scope"], e["from"], e["to"], e["source"], e["actor"]) for e in mine] == [
        ("global", "normal", "shed", "operator", "oncall"), ("global", "shed", "normal", "operator", "oncall")]
    assert all(isinstance(e["time"], float) and e["figures"] == {} for e in mine)
    assert metric(gateway, "gateway_mode_transitions_total", scope="global", from_mode="normal", to_mode="shed",
                  source="operator") == before + 1
    assert metric(gateway, "gateway_mode", scope="global", mode="normal") == 1


def test_a_provider_override_moves_only_the_models_in_front_of_it(gateway, upstream):
    r = put(gateway, mode="degraded", provider="secondary", reason=reason())
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["scopes"]["secondary"]["mode"] == "degraded"
    assert view["scopes"]["global"]["mode"] == "normal" and view["scopes"]["primary"]["mode"] == "normal"
    # ``chat`` falls back to secondary but is judged by its first target (primary).
    assert view["models"] == {"chat": "normal", "embed": "normal", "second": "degraded"}
    r = chat(gateway, model="second", tier="standard")
    assert r.status_code == 200 and r.headers["x-gateway-deferred"] == "true"
    assert r.headers["x-gateway-mode"] == "degraded"
    r = chat(gateway, model="chat", tier="standard")
    assert r.status_code == 200 and "x-gateway-deferred" not in r.headers
    assert r.headers["x-gateway-mode"] == "normal"


@pytest.mark.parametrize(
    "global_mode,primary_mode,chat_mode,second_mode",
    [
        ("degraded", "shed", "shed", "degraded"),
        ("shed", "normal", "shed", "shed"),  # a milder provider override does not soften the global one
        ("normal", "degraded", "degraded", "normal"),
    ],
)
def test_the_effective_mode_is_the_most_severe_of_global_and_provider(gateway, global_mode, primary_mode,
                                                                       chat_mode, second_mode):
    assert put(gateway, mode=global_mode, reason=reason()).status_code == 200
    r = put(gateway, mode=primary_mode, provider="primary", reason=reason())
    assert r.json()["models"] == {"chat": chat_mode, "embed": chat_mode, "second": second_mode}
    assert chat(gateway, model="chat").headers["x-gateway-mode"] == chat_mode
    assert chat(gateway, model="second").headers["x-gateway-mode"] == second_mode


def test_an_override_with_a_ttl_ends_by_itself(gateway):
    why = reason()
    r = put(gateway, mode="degraded", provider="primary", ttl_s=1, reason=why)
    assert r.status_code == 200
    expires_at = r.json()["scopes"]["primary"]["override"]["expires_at"]
    assert chat(gateway, tier="standard").headers["x-gateway-mode"] == "degraded"
    wait_for(lambda: modes(gateway)["scopes"]["primary"]["mode"] == "normal", 3, "the override to expire")
    assert time.time() >= expires_at
    assert modes(gateway)["scopes"]["primary"]["source"] == "auto"
    assert chat(gateway, tier="standard").headers["x-gateway-mode"] == "normal"
    expired = wait_for(lambda: [e for e in audit(gateway) if e["reason"] == "override expired"
                                and e["scope"] == "primary"], 2, "the expiry in the audit log")
    assert (expired[-1]["from"], expired[-1]["to"], expired[-1]["source"], expired[-1]["actor"]) == (
        "degraded", "normal", "operator", "oncall")


def test_a_new_override_replaces_the_old_one(gateway):
    put(gateway, mode="shed", reason=reason())
    why = reason()
    item = put(gateway, mode="degraded", ttl_s=30, reason=why).json()["scopes"]["global"]
    assert item["mode"] == "degraded" and item["override"]["reason"] == why
    assert [(e["from"], e["to"]) for e in audit(gateway) if e["reason"] == why] == [("shed", "degraded")]


def test_clearing_without_an_override_records_nothing(gateway):
    count = len(audit(gateway, 1000))
    r = admin(gateway, "DELETE", "/admin/mode")
    assert r.status_code == 200 and r.json()["scopes"]["global"]["source"] == "auto"
    assert len(audit(gateway, 1000)) == count


def test_audit_is_newest_first_and_limited(gateway):
    whys = [reason() for _ in range(3)]
    for i, why in enumerate(whys):
        put(gateway, mode=("degraded", "shed", "normal")[i], reason=why)
    r = admin(gateway, "GET", "/admin/audit", params={"limit": 2})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    assert [e["reason"] for e in body["data"]] == [whys[2], whys[1]]
    assert set(body["data"][0]) == {"time", "scope", "from", "to", "source", "actor", "reason", "figures"}
    for bad in ("many", "1.5"):
        assert_openai_error(admin(gateway, "GET", "/admin/audit", params={"limit": bad}), 400)
    assert len(admin(gateway, "GET", "/admin/audit", params={"limit": 0}).json()["data"]) == 1  # clamped


def test_status_shows_health_circuits_admission_and_queues(gateway, upstream):
    for _ in range(3):
        assert chat(gateway).status_code == 200
    r = admin(gateway, "GET", "/admin/status")
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["redis"] == "ok" and s["uptime_s"] >= 0 and s["version"]
    assert s["controller"]["automatic"] is True and s["controller"]["shared"] is True
    assert set(s["modes"]) == set(SCOPES)
    assert s["thresholds"]["window_s"] == 3 and s["thresholds"]["exit"]["hold_s"] == 2
    local = s["health"]["primary"]["local"]
    assert local["samples"] >= 3 and local["rate_limited_ratio"] == 0
    assert "primary/p-chat" in s["health"]["primary"]["targets"]
    assert s["circuits"]["primary/p-chat"] == "closed"
    assert set(s["admission"]) == {"primary", "secondary"}
    assert s["admission"]["primary"]["capacity"] == 8
    assert s["admission"]["primary"]["reserved"]["interactive"] == 2
    assert set(s["queue"]) >= {"interactive", "standard", "background"}
    assert all(q["depth"] >= 0 and q["oldest_age_s"] >= 0 for q in s["queue"].values())
    assert "provider_batches" in s
    text = r.text
    for secret in ("sk-upstream-primary", ADMIN_KEY, CLIENT_KEY, "redis://"):
        assert secret not in text


def outbound_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("203.0.113.1", 9))  # no packet is sent; this only picks the route
        except OSError:
            return None
        ip = s.getsockname()[0]
    return None if ip.startswith("127.") else ip


def test_without_admin_keys_the_admin_api_answers_on_loopback_only(make_gateway, upstream, redis_server):
    config = degradation_config(upstream, redis_server.url)
    config["auth"]["admin_keys"] = []
    gw = make_gateway(config, args=("--host", "0.0.0.0"))
    r = admin(gw, "PUT", "/admin/mode", key=None, json={"mode": "degraded", "reason": "local drill"})
    assert r.status_code == 200, r.text
    assert r.json()["scopes"]["global"]["override"]["actor"] == "loopback"
    ip = outbound_ip()
    if ip is None:
        pytest.skip("this machine has no non-loopback address to call from")
    r = httpx.get(f"http://{ip}:{gw.port}/admin/mode", timeout=10)
    error = assert_openai_error(r, 401, type_="authentication_error")
    assert "loopback" in error["message"]


def test_a_ttl_under_a_millisecond_is_accepted_and_ends_at_once(gateway):
    r = put(gateway, mode="shed", ttl_s=0.0004, reason=reason())
    assert r.status_code == 200, r.text
    wait_for(lambda: modes(gateway)["scopes"]["global"]["mode"] == "normal", 2, "the tiny override to end")
