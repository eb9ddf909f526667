"""The health monitor's window: outcome classification, the latency sketch, figures, bounded memory."""

from __future__ import annotations

import math
import random

import pytest

from gateway.health import Figures, Slice, Window, bucket_of, bucket_upper_s, figures, quantile
from gateway.router import Outcome


def outcome(status: int | None = 200, latency_s: float = 0.1, *, timeout: bool = False, ttft_s: float | None = None,
            provider: str = "openai", model: str = "gpt") -> Outcome:
    return Outcome(provider, model, status, timeout, latency_s, ttft_s)


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


@pytest.mark.parametrize("latency_s", [0.0, 0.0005, 0.001])
def test_everything_under_a_millisecond_shares_bucket_zero(latency_s):
    assert bucket_of(latency_s) == 0


@pytest.mark.parametrize("latency_s", [0.0011, 0.0123, 0.25, 1.0, 7.9, 60.0, 299.0])
def test_a_latency_falls_inside_its_ten_percent_bucket(latency_s):
    b = bucket_of(latency_s)
    assert bucket_upper_s(b - 1) <= latency_s * (1 + 1e-9)
    assert latency_s <= bucket_upper_s(b) * (1 + 1e-9)
    assert bucket_upper_s(b) / bucket_upper_s(b - 1) == pytest.approx(1.1)


def test_buckets_grow_with_latency():
    xs = [0.001 * 1.05**i for i in range(300)]
    assert [bucket_of(x) for x in xs] == sorted(bucket_of(x) for x in xs)


@pytest.mark.parametrize(
    "slice_,expected",
    [
        # (status, timeout) of one outcome -> (n, rate_limited, errors, timeouts, latency samples)
        ((200, False), (1, 0, 0, 0, 1)),
        ((400, False), (1, 0, 0, 0, 1)),  # the client's fault, not the provider's
        ((429, False), (1, 1, 0, 0, 0)),  # a 429 answers fast and says nothing about latency
        ((500, False), (1, 0, 1, 0, 1)),
        ((529, False), (1, 0, 1, 0, 1)),  # overloaded
        ((None, False), (1, 0, 1, 0, 1)),  # no HTTP answer: connection refused or reset
        ((None, True), (1, 0, 1, 1, 1)),  # a timeout is an error too
    ],
)
def test_slice_classifies_each_outcome(slice_, expected):
    s = Slice()
    status, timed_out = slice_
    s.add(outcome(status, 0.2, timeout=timed_out))
    assert (s.n, s.rate_limited, s.errors, s.timeouts, sum(s.latency.values())) == expected


def test_time_to_first_token_is_kept_apart_from_latency():
    s = Slice()
    s.add(outcome(200, 2.0, ttft_s=0.3))
    s.add(outcome(200, 1.0))
    assert sum(s.ttft.values()) == 1 and sum(s.latency.values()) == 2
    f = figures([s])
    assert f.ttft_p95_s == pytest.approx(0.3, rel=0.1)
    assert f.p95_s == pytest.approx(2.0, rel=0.1)


def test_quantile_of_nothing_is_none():
    assert quantile({}, 0.95) is None
    assert figures([]) == Figures()
    assert figures([Slice(), Slice()]) == Figures()


@pytest.mark.parametrize(
    "name,values",
    [
        ("uniform ms", [random.Random(1).uniform(0.002, 0.5) for _ in range(1000)]),
        ("long tail", [random.Random(2).lognormvariate(-2.0, 1.2) + 0.001 for _ in range(2000)]),
        ("bimodal", [0.02] * 900 + [8.5] * 100),
        ("constant", [1.234] * 50),
        ("one sample", [0.7]),
        ("spike at p95 edge", [0.05] * 94 + [3.0] * 6),
    ],
)
@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_quantiles_are_within_ten_percent_of_the_truth(name, values, q):
    s = Slice()
    for v in values:
        s.add(outcome(200, v))
    estimate = quantile(s.latency, q)
    truth = nearest_rank(values, q)
    assert estimate == pytest.approx(truth, rel=0.10), name


def test_figures_are_ratios_over_every_attempt():
    s = Slice()
    for _ in range(6):
        s.add(outcome(200, 0.1))
    for _ in range(2):
        s.add(outcome(429, 0.01))
    s.add(outcome(503, 0.1))
    s.add(outcome(None, 5.0, timeout=True))
    f = figures([s])
    assert f.samples == 10
    assert f.rate_limited_ratio == pytest.approx(0.2)
    assert f.error_ratio == pytest.approx(0.2)
    assert f.timeout_ratio == pytest.approx(0.1)
    d = f.as_dict()
    assert set(d) == {"samples", "p50_latency_s", "p95_latency_s", "ttft_p95_s", "rate_limited_ratio",
                      "error_ratio", "timeout_ratio"}
    assert d["samples"] == 10 and d["rate_limited_ratio"] == 0.2 and d["ttft_p95_s"] is None


def test_an_all_429_window_has_no_latency_but_full_rate_limited_ratio():
    s = Slice()
    for _ in range(5):
        s.add(outcome(429, 0.01))
    f = figures([s])
    assert (f.samples, f.p95_s, f.rate_limited_ratio) == (5, None, 1.0)


def test_slices_add_across_replicas_like_one_window():
    a, b, whole = Slice(), Slice(), Slice()
    rng = random.Random(3)
    for i in range(400):
        o = outcome(rng.choice([200, 200, 200, 429, 500, None]), rng.uniform(0.001, 3.0), ttft_s=0.1 if i % 3 else None)
        (a if i % 2 else b).add(o)
        whole.add(o)
    merged = Slice()
    merged.merge(a)
    merged.merge(b)
    assert merged == whole
    assert figures([a, b]) == figures([whole])


def test_a_slice_survives_the_trip_through_a_redis_hash():
    s = Slice()
    for o in (outcome(200, 0.3, ttft_s=0.05), outcome(429), outcome(None, 9.0, timeout=True), outcome(502, 0.0004)):
        s.add(o)
    # Redis answers HGETALL with bytes keys and values.
    as_redis = {k.encode(): str(v).encode() for k, v in s.to_fields().items()}
    assert Slice.from_fields(as_redis) == s
    assert Slice.from_fields({}) == Slice()


def test_window_keeps_a_provider_scope_and_a_target_scope():
    w = Window(3)
    w.observe(outcome(429, provider="openai", model="a"), 100.2)
    w.observe(outcome(200, provider="openai", model="b"), 100.7)
    assert w.local_figures("openai", 100.9).samples == 2
    assert w.local_figures("openai/a", 100.9).rate_limited_ratio == 1.0
    assert w.local_figures("openai/b", 100.9).rate_limited_ratio == 0.0
    assert w.local_figures("claude", 100.9) == Figures()


def test_window_forgets_what_is_older_than_window_s():
    w = Window(3)
    w.observe(outcome(429), 100.5)
    w.observe(outcome(200), 102.5)
    assert w.local_figures("openai", 102.9).samples == 2
    assert w.local_figures("openai", 103.0).samples == 1  # second 100 has left the 3 s window
    assert w.local_figures("openai", 106.0) == Figures()


def test_window_memory_is_bounded_whatever_the_traffic():
    w = Window(5)
    rng = random.Random(4)
    now = 1000.0
    for _ in range(20000):
        now += 0.05
        w.observe(outcome(rng.choice([200, 429, 500]), rng.uniform(0.001, 30.0)), now)
        w.take_pending()  # the controller flushes every tick
    for scope, slices in w.local.items():
        assert len(slices) <= w.window_s + 1, scope
        for s in slices.values():
            assert len(s.latency) <= bucket_of(30.0) + 1
    assert w.pending == {}


def test_pending_counts_are_handed_over_once():
    w = Window(3)
    w.observe(outcome(429), 100.1)
    w.observe(outcome(200), 101.1)
    pending = w.take_pending()
    assert sorted(pending) == ["openai", "openai/gpt"]
    assert {sec: s.n for sec, s in pending["openai"].items()} == {100: 1, 101: 1}
    assert w.take_pending() == {}
    assert w.local_figures("openai", 101.5).samples == 2  # the local copy stays


def test_a_window_shorter_than_a_second_still_holds_one_slice():
    w = Window(0.2)
    assert w.window_s == 1
    w.observe(outcome(200), 50.3)
    assert w.local_figures("openai", 50.9).samples == 1
