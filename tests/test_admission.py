"""Admission: the reservation arithmetic (``admits``) as a table, and the asyncio ``Limiter`` around it."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import openai
import pytest

from gateway.admission import Limiter, TierShare, admits
from gateway.errors import Saturated
from tests.conftest import CLIENT_KEY, base_config
from tests.support.sdk import assert_openai_error, metric, sdk
from tests.support.upstream import Behaviour

# capacity 8: interactive reserves 2, standard 1, background none.
SHARES = {
    "interactive": TierShare(priority=0, reserved=2),
    "standard": TierShare(priority=1, reserved=1),
    "background": TierShare(priority=2, reserved=0),
}


@pytest.mark.parametrize(
    "tier,inflight,capacity,expected",
    [
        # an idle provider admits every tier
        ("interactive", {}, 8, True),
        ("standard", {}, 8, True),
        ("background", {}, 8, True),
        # background may fill only what nobody more urgent reserved: 8 - 2 - 1 = 5 slots
        ("background", {"background": 4}, 8, True),
        ("background", {"background": 5}, 8, False),
        # standard may also take background's (empty) share, but not interactive's reservation
        ("standard", {"background": 5}, 8, True),
        ("standard", {"background": 5, "standard": 1}, 8, False),
        # interactive may use every free slot, the reservations of less urgent tiers included
        ("interactive", {"background": 5, "standard": 1}, 8, True),
        ("interactive", {"background": 5, "standard": 1, "interactive": 1}, 8, True),
        ("interactive", {"background": 5, "standard": 1, "interactive": 2}, 8, False),
        ("interactive", {"background": 5, "standard": 2, "interactive": 1}, 8, False),
        # a reservation in use is no longer held back from the others
        ("background", {"interactive": 2, "background": 4}, 8, True),
        ("background", {"interactive": 2, "standard": 1, "background": 4}, 8, True),
        ("background", {"interactive": 2, "standard": 1, "background": 5}, 8, False),
        # a reservation partly in use holds back only the rest
        ("background", {"interactive": 1, "background": 4}, 8, True),
        ("background", {"interactive": 1, "background": 5}, 8, False),
        # a full provider admits nobody
        ("interactive", {"background": 8}, 8, False),
        ("interactive", {"interactive": 8}, 8, False),
        # reservations larger than the capacity: the less urgent tiers get nothing
        ("background", {}, 3, False),
        ("standard", {}, 3, True),
        ("standard", {"standard": 1}, 3, False),
    ],
)
def test_admits(tier, inflight, capacity, expected):
    assert admits(tier, inflight, SHARES, capacity) is expected


@pytest.mark.parametrize(
    "tier,inflight,expected",
    [
        # tiers of equal priority hold each other's reservations back
        ("a", {}, True),
        ("a", {"a": 2}, True),
        ("a", {"a": 3}, False),  # 4 - b's 1 reserved = 3
        ("b", {"a": 3}, True),
        ("a", {"a": 2, "b": 1}, True),
    ],
)
def test_admits_with_equal_priorities(tier, inflight, expected):
    shares = {"a": TierShare(0, 1), "b": TierShare(0, 1)}
    assert admits(tier, inflight, shares, 4) is expected


@pytest.mark.parametrize(
    "tier,inflight,expected",
    [
        ("interactive", {}, 8),
        ("standard", {}, 6),
        ("background", {}, 5),
        ("background", {"interactive": 2}, 5),
        ("background", {"background": 5}, 0),
        ("interactive", {"background": 5, "standard": 1}, 2),
    ],
)
def test_free_for(tier, inflight, expected):
    limiter = Limiter(8, SHARES)
    limiter.inflight.update(inflight)
    assert limiter.free_for(tier) == expected
    assert limiter.inflight == {**{t: 0 for t in SHARES}, **inflight}  # a question, not a change


def test_try_acquire_counts_and_release_frees():
    limiter = Limiter(8, SHARES)
    taken = [limiter.try_acquire("background") for _ in range(6)]
    assert taken == [True] * 5 + [False]
    assert limiter.inflight["background"] == 5
    assert limiter.try_acquire("interactive")
    limiter.release("background")
    assert limiter.inflight == {"interactive": 1, "standard": 0, "background": 4}
    assert limiter.try_acquire("background")


async def test_acquire_without_a_wait_refuses_with_retry_after():
    limiter = Limiter(1, {"t": TierShare(0, 0)})
    await limiter.acquire("t", 0.1)
    with pytest.raises(Saturated) as err:
        await limiter.acquire("t", 0)
    assert err.value.status == 429 and err.value.headers["Retry-After"] == "1"


async def test_acquire_times_out_and_forgets_the_waiter():
    limiter = Limiter(1, {"t": TierShare(0, 0)})
    await limiter.acquire("t", 0.1)
    with pytest.raises(Saturated) as err:
        await limiter.acquire("t", 0.05)
    assert err.value.headers["Retry-After"] == "1"
    assert limiter._waiters == []
    limiter.release("t")
    assert limiter.inflight == {"t": 0}


async def test_a_release_wakes_the_most_urgent_waiter_first():
    limiter = Limiter(8, SHARES)
    for _ in range(5):
        assert limiter.try_acquire("background")
    for _ in range(3):
        assert limiter.try_acquire("interactive")
    order: list[str] = []

    async def wait(tier: str) -> None:
        await limiter.acquire(tier, 5.0)
        order.append(tier)

    background = asyncio.create_task(wait("background"))
    await asyncio.sleep(0)
    interactive = asyncio.create_task(wait("interactive"))
    await asyncio.sleep(0)
    assert order == [] and len(limiter._waiters) == 2

    limiter.release("interactive")  # one slot: the interactive waiter takes it, though it came second
    await asyncio.wait_for(interactive, 1.0)
    assert order == ["interactive"] and not background.done()

    limiter.release("interactive")  # still not enough for background: interactive's reservation is free again
    await asyncio.sleep(0.01)
    assert not background.done()
    limiter.release("background")
    await asyncio.wait_for(background, 1.0)
    assert order == ["interactive", "background"]
    assert limiter.inflight == {"interactive": 2, "standard": 0, "background": 5}


async def test_try_acquire_does_not_overtake_an_equally_urgent_waiter():
    limiter = Limiter(1, {"t": TierShare(0, 0), "low": TierShare(1, 0)})
    assert limiter.try_acquire("t")
    waiter = asyncio.create_task(limiter.acquire("t", 5.0))
    await asyncio.sleep(0)
    limiter.inflight["t"] -= 1  # a slot frees without waking anyone (as between release and wake-up)
    assert not limiter.try_acquire("t")
    assert not limiter.try_acquire("low")
    limiter._wake()
    await asyncio.wait_for(waiter, 1.0)
    assert limiter.inflight == {"t": 1, "low": 0}


async def test_a_cancelled_waiter_leaves_no_trace():
    limiter = Limiter(1, {"t": TierShare(0, 0)})
    assert limiter.try_acquire("t")
    waiter = asyncio.create_task(limiter.acquire("t", 5.0))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter._waiters == []
    limiter.release("t")
    assert limiter.inflight == {"t": 0}
    assert limiter.try_acquire("t")


async def test_a_waiter_granted_as_it_is_cancelled_gives_its_slot_back():
    limiter = Limiter(1, {"t": TierShare(0, 0)})
    assert limiter.try_acquire("t")
    waiter = asyncio.create_task(limiter.acquire("t", 5.0))
    await asyncio.sleep(0)
    limiter.release("t")  # grants the slot to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs again
    try:
        await waiter
        holds = 1  # Python 3.11's wait_for lets a completed wait win over the cancellation
    except asyncio.CancelledError:
        holds = 0
    # Either way no slot is lost: the waiter holds it, or it was given back.
    assert limiter.inflight == {"t": holds}
    assert limiter._waiters == []
    assert limiter.try_acquire("t") is (holds == 0)


# -- live: a gateway whose low-priority sync tier fills every shared slot

SLOW_S = 3.0


def reserved_config(upstream, redis_url: str) -> dict:
    config = base_config(upstream, redis_url)
    config["providers"] = {"primary": {"kind": "openai", "base_url": upstream.base_url, "api_key": "sk-up",
                                       "max_concurrency": 4}}
    config["models"] = {"slow": {"targets": [{"provider": "primary", "model": "adm-slow"}]},
                        "fast": {"targets": [{"provider": "primary", "model": "adm-fast"}]}}
    config["tiers"] = {
        "interactive": {"priority": 0, "reserved_concurrency": 1, "timeout_s": 10, "retries": 0,
                        "admission_timeout_s": 0.2},
        # sync and not deferrable: when it finds no slot it is refused, not queued
        "bulk": {"priority": 2, "timeout_s": 10, "retries": 0, "admission_timeout_s": 0.2},
    }
    config["auth"]["clients"] = [{"name": "app", "key": CLIENT_KEY, "tiers": ["interactive", "bulk"],
                                  "default_tier": "bulk"}]
    return config


@pytest.fixture(scope="module")
def reserved_gateway(make_module_gateway, upstream_server, redis_server):
    return make_module_gateway(reserved_config(upstream_server, redis_server.url))


def test_an_interactive_request_starts_while_bulk_traffic_holds_every_shared_slot(reserved_gateway, upstream):
    gw = reserved_gateway
    upstream.default("adm-slow", Behaviour(delay_s=SLOW_S))
    results: list[int] = []

    def slow_request() -> None:
        r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "slow", "messages": [{"role": "user", "content": "x"}]},
                       headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=20.0)
        results.append(r.status_code)

    threads = [threading.Thread(target=slow_request) for _ in range(3)]  # 4 slots - 1 reserved for interactive
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while len(upstream.calls("adm-slow")) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(upstream.calls("adm-slow")) == 3

    # Bulk traffic finds no slot: after its short admission wait it is refused with 429 and Retry-After.
    refused = httpx.post(gw.url + "/v1/chat/completions", json={"model": "fast", "messages": [{"role": "user", "content": "x"}]},
                         headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=20.0)
    assert_openai_error(refused, 429, type_="rate_limit_error", code="gateway_saturated")
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-gateway-tier"] == "bulk"
    assert refused.headers["x-request-id"]
    assert upstream.calls("adm-fast") == []

    # An interactive request takes the reserved slot at once: it is answered while all three slow ones still hold.
    reply = sdk(gw, CLIENT_KEY).chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "now"}], extra_headers={"X-Gateway-Tier": "interactive"})
    assert reply.parse().choices[0].message.content
    assert reply.headers["x-gateway-tier"] == "interactive"
    assert upstream.active["adm-slow"] == 3, "the interactive answer came only after the slow requests released"
    assert results == []

    for t in threads:
        t.join(20)
    assert results == [200, 200, 200]
    assert upstream.peak["adm-slow"] == 3
    assert metric(gw, "gateway_requests_total", tier="bulk", model="fast", route="chat.completions",
                  outcome="rate_limited") == 1


def test_slots_are_released_after_each_request(reserved_gateway, upstream):
    # Sequential requests, many more than the capacity: each one gives its slot back (errors included).
    upstream.default("adm-fast", Behaviour())
    c = sdk(reserved_gateway, CLIENT_KEY)
    for i in range(6):
        upstream.script("adm-fast", Behaviour(status=500 if i % 2 else 200))
        try:
            c.chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}])
        except openai.InternalServerError:
            assert i % 2
    for _ in range(4):
        list(c.chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}], stream=True))
    assert metric(reserved_gateway, "gateway_inflight", tier="bulk") == 0
    assert metric(reserved_gateway, "gateway_inflight", tier="interactive") == 0
    # Every shared slot is free again: three concurrent bulk requests (the whole share) all get in.
    upstream.default("adm-slow", Behaviour(delay_s=0.5))
    codes: list[int] = []

    def one() -> None:
        r = httpx.post(reserved_gateway.url + "/v1/chat/completions",
                       json={"model": "slow", "messages": [{"role": "user", "content": "x"}]},
                       headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=20.0)
        codes.append(r.status_code)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert codes == [200, 200, 200]
