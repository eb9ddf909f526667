"""The mode controller end to end: live gateways, a fake upstream whose faults change while they run, real Redis.

Each test drives one provider (``primary``) into trouble through the upstream and
watches the automatic controller react through the admin API, the response
headers, the audit log and ``/metrics``. Windows are a few seconds long so the
tests stay short; every wait is a poll with a deadline.
"""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.conftest import CLIENT_KEY
from tests.support.modes import (
    EXIT,
    admin,
    audit,
    chat,
    degradation_config,
    in_parallel,
    mode_of,
    modes,
    wait_for,
    wait_mode,
)
from tests.support.redis import RedisServer
from tests.support.sdk import assert_openai_error, metric, sdk
from tests.support.upstream import Behaviour

WINDOW_S = 3
HOLD_S = 2
STORM = Behaviour(status=429, headers={"retry-after": "0"})
MESSAGES = [{"role": "user", "content": "hello"}]


def config_for(upstream, redis_server, **kw):
    kw.setdefault("hold_s", HOLD_S)
    config = degradation_config(upstream, redis_server.url, window_s=WINDOW_S, **kw)
    # A model whose fallback is too slow to finish inside standard's hold_s: held requests end in 503 + job id.
    config["models"]["slowchat"] = {"targets": [{"provider": "primary", "model": "p-slow"},
                                                {"provider": "secondary", "model": "s-slow"}]}
    # A sync tier below the top that cannot wait: shed refuses it.
    config["tiers"]["bulk"] = {"priority": 3, "timeout_s": 5, "retries": 0, "admission_timeout_s": 0.2}
    config["auth"]["clients"][0]["tiers"].append("bulk")
    return config


_sdks: dict[str, openai.OpenAI] = {}


@pytest.fixture(autouse=True)
def _close_sdk_clients():
    yield
    for client in _sdks.values():
        client.close()
    _sdks.clear()


def client_for(gw) -> openai.OpenAI:
    """One SDK client per gateway and test (closed afterwards), shared by threads."""
    if gw.url not in _sdks:
        _sdks[gw.url] = sdk(gw, CLIENT_KEY)
    return _sdks[gw.url]


def interactive(gw, model: str = "chat"):
    """One interactive chat completion through the official SDK; returns the raw response."""
    return client_for(gw).chat.completions.with_raw_response.create(model=model, messages=MESSAGES)


def standard(gw, model: str = "chat"):
    return client_for(gw).chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, extra_headers={"X-Gateway-Tier": "standard"}
    )


def storm(gw, upstream, requests: int = 3) -> float:
    """Make primary answer 429 and push interactive traffic through; returns when the last answer came."""
    upstream.default("p-chat", STORM)
    upstream.default("p-slow", STORM)
    for raw in in_parallel(requests, lambda: interactive(gw)):
        # Interactive work stays synchronous and succeeds through fallback to the secondary target.
        assert raw.status_code == 200
        assert raw.headers["x-gateway-target"] == "secondary/s-chat"
        assert raw.parse().choices[0].message.content
    assert len(upstream.calls("p-chat")) >= 5  # min_samples worth of 429s reached primary
    return time.monotonic()


def transitions(gw, scope: str) -> list[tuple[str, str, str]]:
    return [(e["from"], e["to"], e["source"]) for e in audit(gw) if e["scope"] == scope]


def wait_transitions(gw, scope: str, expected: list[tuple[str, str, str]], timeout: float = 2.0) -> None:
    """The audit log of ``scope`` becomes ``expected`` (it is written just after the state it records)."""
    deadline = time.monotonic() + timeout
    while transitions(gw, scope) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert transitions(gw, scope) == expected


def test_a_429_storm_degrades_the_provider_and_defers_standard_work(make_gateway, upstream, redis_server):
    gw = make_gateway(config_for(upstream, redis_server))
    raw = standard(gw)
    assert raw.status_code == 200
    assert raw.headers["x-gateway-mode"] == "normal"
    assert "x-gateway-deferred" not in raw.headers  # healthy: standard is served synchronously
    assert mode_of(gw, "primary") == "normal"

    stormed_at = storm(gw, upstream)
    view = wait_mode(gw, "primary", "degraded", timeout=WINDOW_S)
    assert time.monotonic() - stormed_at <= WINDOW_S
    assert view["source"] == "auto" and view["override"] is None
    assert "429 ratio" in view["auto"]["reason"]
    assert view["auto"]["figures"]["samples"] >= 5
    assert view["auto"]["figures"]["rate_limited_ratio"] > 0.2
    whole = modes(gw)
    assert whole["scopes"]["global"]["mode"] == "normal"
    assert whole["scopes"]["secondary"]["mode"] == "normal"
    assert whole["models"] == {"chat": "degraded", "embed": "degraded", "slowchat": "degraded"}

    # Standard work with the opt-in: 202 and a job.
    r = chat(gw, tier="standard", prefer_async=True)
    assert r.status_code == 202, r.text
    assert r.headers["x-gateway-mode"] == "degraded"
    assert r.json()["object"] == "gateway.job" and r.headers["location"] == f"/v1/jobs/{r.json()['id']}"

    # Without it: held, and answered in time through the queue (fallback drains it to secondary).
    raw = standard(gw)
    assert raw.status_code == 200
    assert raw.headers["x-gateway-deferred"] == "true"
    assert raw.headers["x-gateway-mode"] == "degraded"
    assert raw.headers["x-gateway-target"] == "secondary/s-chat"
    assert raw.parse().choices[0].message.content

    # Held past hold_s when the job cannot finish: 503 with the job id, and the work goes on.
    upstream.default("s-slow", Behaviour(delay_s=HOLD_S + 1.0))
    with pytest.raises(openai.InternalServerError) as err:
        standard(gw, model="slowchat")
    response = err.value.response
    error = assert_openai_error(response, 503, code="request_deferred")
    job_id = response.headers["x-gateway-job-id"]
    assert error["job_id"] == job_id and int(response.headers["retry-after"]) >= 1
    assert response.headers["x-gateway-mode"] == "degraded"
    done = chat_job(gw, job_id, wait=10)
    assert done["status"] == "succeeded" and done["tier"] == "standard"

    # Interactive stays synchronous, through fallback, while primary is degraded.
    raw = interactive(gw)
    assert raw.status_code == 200
    assert raw.headers["x-gateway-mode"] == "degraded"
    assert raw.headers["x-gateway-target"] == "secondary/s-chat"
    assert "x-gateway-deferred" not in raw.headers

    # The transition is audited once, with its figures, and counted.
    wait_transitions(gw, "primary", [("normal", "degraded", "auto")])
    entries = [e for e in audit(gw) if e["scope"] == "primary"]
    assert entries[0]["actor"] == "controller" and "429 ratio" in entries[0]["reason"]
    assert entries[0]["figures"]["rate_limited_ratio"] > 0.2 and entries[0]["figures"]["samples"] >= 5
    assert metric(gw, "gateway_mode", scope="primary", mode="degraded") == 1
    assert metric(gw, "gateway_mode", scope="primary", mode="normal") == 0
    assert metric(gw, "gateway_mode", scope="secondary", mode="normal") == 1
    assert metric(gw, "gateway_mode_transitions_total", scope="primary", from_mode="normal", to_mode="degraded",
                  source="auto") == 1
    assert "mode primary: normal -> degraded (auto)" in gw.log()

    # An operator override beats the controller, even towards normal; clearing it hands control back.
    interactive(gw)  # more 429s: the controller's own view stays degraded
    r = admin(gw, "PUT", "/admin/mode", json={"mode": "normal", "provider": "primary", "reason": "known noise"})
    item = r.json()["scopes"]["primary"]
    assert (item["mode"], item["source"], item["auto"]["mode"]) == ("normal", "operator", "degraded")
    raw = standard(gw)
    assert raw.headers["x-gateway-mode"] == "normal" and "x-gateway-deferred" not in raw.headers
    r = admin(gw, "DELETE", "/admin/mode", json={"provider": "primary"})
    assert (r.json()["scopes"]["primary"]["mode"], r.json()["scopes"]["primary"]["source"]) == ("degraded", "auto")
    assert interactive(gw).headers["x-gateway-mode"] == "degraded"
    assert transitions(gw, "primary") == [("normal", "degraded", "auto"), ("degraded", "normal", "operator"),
                                          ("normal", "degraded", "operator")]
    assert [e["actor"] for e in audit(gw)][-2:] == ["oncall", "oncall"]


def chat_job(gw, job_id: str, wait: float) -> dict:
    r = httpx.get(f"{gw.url}/v1/jobs/{job_id}", params={"wait": wait},
                  headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=wait + 5)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_latency_spike_degrades_and_recovery_waits_for_hold_s(make_gateway, upstream, redis_server):
    gw = make_gateway(config_for(upstream, redis_server))
    upstream.default("p-chat", Behaviour(delay_s=0.8))  # p95 over the 0.5 s enter threshold
    for raw in in_parallel(5, lambda: interactive(gw)):
        assert raw.status_code == 200 and raw.headers["x-gateway-target"] == "primary/p-chat"
    spiked_at = time.monotonic()
    view = wait_mode(gw, "primary", "degraded", timeout=WINDOW_S)
    assert time.monotonic() - spiked_at <= WINDOW_S
    assert "p95 latency" in view["auto"]["reason"]
    assert view["auto"]["figures"]["p95_latency_s"] > 0.5

    # Slow but working: interactive stays sync on primary, standard is deferred and comes back in time.
    raw = interactive(gw)
    assert raw.status_code == 200 and raw.headers["x-gateway-mode"] == "degraded"
    assert "x-gateway-deferred" not in raw.headers
    raw = standard(gw)
    assert raw.status_code == 200
    assert raw.headers["x-gateway-deferred"] == "true" and raw.headers["x-gateway-mode"] == "degraded"
    r = chat(gw, tier="standard", prefer_async=True)
    assert r.status_code == 202 and r.headers["x-gateway-mode"] == "degraded"

    # Recovery: healthy answers from now on. Figures turn calm once the slow ones leave the window,
    # and the mode steps down only after hold_s more of calm.
    upstream.default("p-chat", Behaviour())
    healthy_at = time.monotonic()
    seen_calm_at: float | None = None
    deadline = healthy_at + WINDOW_S + HOLD_S + 4
    while True:
        interactive(gw)  # keep healthy samples coming
        item = modes(gw)["scopes"]["primary"]
        now = time.monotonic()
        if item["mode"] == "normal":
            break
        assert item["mode"] == "degraded"
        f = item["auto"]["figures"]
        if seen_calm_at is None and (f.get("p95_latency_s") or 0) <= EXIT["p95_latency_s"]:
            seen_calm_at = now
        assert now < deadline, f"still degraded {now - healthy_at:.1f}s after recovery: {item}"
        time.sleep(0.1)
    assert seen_calm_at is not None, "stepped down without ever showing calm figures"
    # hold_s of calm first (less one controller tick of polling slack).
    assert now - seen_calm_at >= HOLD_S - 0.6
    assert now - healthy_at >= HOLD_S

    raw = standard(gw)
    assert raw.status_code == 200
    assert raw.headers["x-gateway-mode"] == "normal", transitions(gw, "primary")
    assert "x-gateway-deferred" not in raw.headers

    wait_transitions(gw, "primary", [("normal", "degraded", "auto"), ("degraded", "normal", "auto")])
    entries = [e for e in audit(gw) if e["scope"] == "primary"]
    assert entries[1]["reason"] == f"healthy for {HOLD_S}s"
    assert entries[1]["time"] - entries[0]["time"] >= HOLD_S
    assert entries[1]["figures"]["p95_latency_s"] is None or entries[1]["figures"]["p95_latency_s"] <= 0.25
    for to in ("degraded", "normal"):
        frm = "normal" if to == "degraded" else "degraded"
        assert metric(gw, "gateway_mode_transitions_total", scope="primary", from_mode=frm, to_mode=to,
                      source="auto") == 1
    assert metric(gw, "gateway_mode", scope="primary", mode="normal") == 1
    assert metric(gw, "gateway_mode", scope="primary", mode="degraded") == 0


def test_a_short_healthy_blip_does_not_flip_the_mode(make_gateway, upstream, redis_server):
    hold_s = 3
    gw = make_gateway(config_for(upstream, redis_server, hold_s=hold_s))
    storm(gw, upstream)
    wait_mode(gw, "primary", "degraded", timeout=WINDOW_S)

    # The blip: primary answers again, until the window's figures show calm...
    upstream.default("p-chat", Behaviour())

    def calm_now():
        assert interactive(gw).headers["x-gateway-target"] == "primary/p-chat"  # healthy samples
        item = modes(gw)["scopes"]["primary"]
        assert item["mode"] == "degraded"
        return item["auto"]["figures"]["rate_limited_ratio"] <= EXIT["rate_limited_ratio"]

    wait_for(calm_now, WINDOW_S + 2, "calm figures after the storm", interval=0.1)
    calm_seen = time.monotonic()
    # ... and then, well inside hold_s, the storm is back.
    storm(gw, upstream)
    # Had the blip counted, the mode would be normal by calm_seen + hold_s. It stays degraded.
    while time.monotonic() < calm_seen + hold_s + 1.0:
        assert mode_of(gw, "primary") == "degraded"
        time.sleep(0.1)
    assert transitions(gw, "primary") == [("normal", "degraded", "auto")]
    assert metric(gw, "gateway_mode_transitions_total", scope="primary", from_mode="degraded", to_mode="normal",
                  source="auto") == 0


def test_a_severe_storm_escalates_to_shed(make_gateway, upstream, redis_server):
    shed = {"p95_latency_s": 5.0, "rate_limited_ratio": 0.5, "error_ratio": 0.9}
    gw = make_gateway(config_for(upstream, redis_server, shed=shed))
    storm(gw, upstream)
    view = wait_mode(gw, "primary", "shed", timeout=WINDOW_S + 1)
    assert "429 ratio" in view["auto"]["reason"]
    wait_transitions(gw, "primary", [("normal", "degraded", "auto"), ("degraded", "shed", "auto")])

    raw = interactive(gw)  # the top tier stays synchronous
    assert raw.status_code == 200 and raw.headers["x-gateway-mode"] == "shed"
    r = chat(gw, tier="bulk")  # a sync tier that cannot wait is refused
    assert_openai_error(r, 503, code="load_shed")
    assert r.headers["x-gateway-mode"] == "shed" and "retry-after" in r.headers
    r = chat(gw, tier="standard", prefer_async=True)  # deferrable work still queues
    assert r.status_code == 202
    assert metric(gw, "gateway_mode", scope="primary", mode="shed") == 1
    assert metric(gw, "gateway_mode_transitions_total", scope="primary", from_mode="degraded", to_mode="shed",
                  source="auto") == 1


def test_with_automatic_control_off_a_storm_changes_nothing(make_gateway, upstream, redis_server):
    gw = make_gateway(config_for(upstream, redis_server, enabled=False))
    storm(gw, upstream, requests=4)
    # Several controller ticks with a breached window: still normal.
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        assert mode_of(gw, "primary") == "normal"
        time.sleep(0.1)
    assert modes(gw)["automatic"] is False
    raw = standard(gw)
    assert raw.status_code == 200 and "x-gateway-deferred" not in raw.headers
    assert transitions(gw, "primary") == []


def test_two_replicas_report_the_same_mode_within_a_second(make_gateway, upstream, redis_server):
    config = config_for(upstream, redis_server)
    a = make_gateway(config)
    b = make_gateway(config)  # same Redis, same namespace: one deployment of two replicas

    def agree_after(change, scope: str, mode: str) -> None:
        """Run ``change`` on one replica; both must report ``mode`` for ``scope`` within a second of it."""
        seen: dict[str, float] = {}
        started = time.monotonic()
        change()
        changed = time.monotonic()
        deadline = changed + 1.0
        while len(seen) < 2 and time.monotonic() < deadline + 0.5:
            for name, gw in (("a", a), ("b", b)):
                if name not in seen and mode_of(gw, scope) == mode:
                    seen[name] = time.monotonic()
            time.sleep(0.02)
        assert set(seen) == {"a", "b"}, f"only {seen} reported {mode} ({time.monotonic() - started:.2f}s)"
        assert max(seen.values()) - changed <= 1.0, seen

    # An override set on one replica.
    put = {"mode": "degraded", "provider": "primary", "reason": "replica drill"}
    agree_after(lambda: admin(a, "PUT", "/admin/mode", json=put).raise_for_status(), "primary", "degraded")
    raw = standard(b)
    assert raw.headers["x-gateway-mode"] == "degraded" and raw.headers["x-gateway-deferred"] == "true"
    # Cleared on the other.
    agree_after(lambda: admin(b, "DELETE", "/admin/mode", params={"provider": "primary"}).raise_for_status(),
                "primary", "normal")

    # An automatic transition, driven by traffic through replica a only.
    upstream.default("p-chat", STORM)
    for raw in in_parallel(3, lambda: interactive(a)):
        assert raw.status_code == 200
    first: dict[str, float] = {}
    deadline = time.monotonic() + WINDOW_S + 1
    while len(first) < 2 and time.monotonic() < deadline:
        for name, gw in (("a", a), ("b", b)):
            if name not in first and mode_of(gw, "primary") == "degraded":
                first[name] = time.monotonic()
        time.sleep(0.02)
    assert set(first) == {"a", "b"}, first
    assert abs(first["a"] - first["b"]) <= 1.0, first

    # One shared audit log: the same records from either replica.
    wait_transitions(a, "primary", [("normal", "degraded", "operator"), ("degraded", "normal", "operator"),
                                    ("normal", "degraded", "auto")])
    assert audit(a) == audit(b)


def test_without_redis_each_replica_keeps_its_modes_and_decides_on_its_own_window(make_gateway, upstream, tmp_path):
    private = RedisServer(tmp_path / "redis").start()
    try:
        gw = make_gateway(config_for(upstream, private))
        put = {"mode": "degraded", "provider": "secondary", "reason": "before the outage"}
        assert admin(gw, "PUT", "/admin/mode", json=put).status_code == 200
        wait_for(lambda: modes(gw)["shared"], 3, "the controller reaching Redis")
        private.stop()
        wait_for(lambda: not modes(gw)["shared"], 3, "the controller noticing Redis is gone")
        # The override it knew still holds, and sync traffic is still served.
        assert mode_of(gw, "secondary") == "degraded"
        raw = interactive(gw)
        assert raw.status_code == 200 and raw.headers["x-gateway-mode"] == "normal"

        # A storm is judged on this replica's own window.
        stormed_at = storm(gw, upstream)
        view = wait_mode(gw, "primary", "degraded", timeout=WINDOW_S)
        assert time.monotonic() - stormed_at <= WINDOW_S
        assert view["source"] == "auto" and "429 ratio" in view["auto"]["reason"]
        assert interactive(gw).headers["x-gateway-mode"] == "degraded"

        # Overrides are shared through Redis, so setting one now is refused rather than applied to one replica.
        r = admin(gw, "PUT", "/admin/mode", json={"mode": "shed", "reason": "during the outage"})
        assert_openai_error(r, 503, code="queue_unavailable")
        assert_openai_error(admin(gw, "GET", "/admin/audit"), 503, code="queue_unavailable")
        assert mode_of(gw, "global") == "normal"
    finally:
        private.stop()
