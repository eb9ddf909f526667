"""Tier decisions as tables: which tier a request is in, and which path serves it."""

from __future__ import annotations

import pytest

from gateway.auth import Client
from gateway.config import TierConfig
from gateway.errors import InvalidRequest, PermissionDenied
from gateway.severity import Mode
from gateway.tiers import Path, choose_path, choose_tier, prefers_async

TIERS = {
    "interactive": TierConfig(priority=0),
    "standard": TierConfig(priority=1, deferrable=True, hold_s=15),
    "background": TierConfig.model_validate({"priority": 2, "async": True}),
    "bulk": TierConfig(priority=3),  # sync, not deferrable, least urgent
}
WEB = Client("web", frozenset({"interactive", "standard"}), "interactive")
BATCH = Client("batch", frozenset({"standard", "background"}), "background")


@pytest.mark.parametrize(
    "client,header,expected",
    [
        (WEB, None, "interactive"),
        (WEB, "", "interactive"),
        (BATCH, None, "background"),
        (WEB, "standard", "standard"),
        (WEB, " standard ", "standard"),
        (BATCH, "standard", "standard"),
    ],
)
def test_choose_tier(client, header, expected):
    assert choose_tier(client, header, TIERS) == expected


@pytest.mark.parametrize(
    "client,header,error,status,code",
    [
        (WEB, "background", PermissionDenied, 403, "tier_not_allowed"),
        (BATCH, "interactive", PermissionDenied, 403, "tier_not_allowed"),
        (WEB, "bulk", PermissionDenied, 403, "tier_not_allowed"),
        (WEB, "platinum", InvalidRequest, 400, "unknown_tier"),
        (WEB, "Interactive", InvalidRequest, 400, "unknown_tier"),  # tier names are exact
    ],
)
def test_choose_tier_refuses(client, header, error, status, code):
    with pytest.raises(error) as err:
        choose_tier(client, header, TIERS)
    assert err.value.status == status
    assert err.value.code == code
    assert err.value.param == "X-Gateway-Tier"


N, D, S = Mode.NORMAL, Mode.DEGRADED, Mode.SHED


@pytest.mark.parametrize(
    "tier,mode,prefer_async,expected",
    [
        # normal: every tier as configured
        ("interactive", N, False, Path.SYNC),
        ("standard", N, False, Path.SYNC),
        ("background", N, False, Path.ASYNC),
        ("bulk", N, False, Path.SYNC),
        # Prefer: respond-async always queues
        ("interactive", N, True, Path.ASYNC),
        ("standard", N, True, Path.ASYNC),
        ("standard", D, True, Path.ASYNC),
        # degraded: deferrable tiers are deferred (held), the others stay sync
        ("interactive", D, False, Path.SYNC),
        ("standard", D, False, Path.HOLD),
        ("background", D, False, Path.ASYNC),
        ("bulk", D, False, Path.SYNC),
        # shed: only the most urgent tier stays sync; deferrable ones wait, the rest are refused
        ("interactive", S, False, Path.SYNC),
        ("standard", S, False, Path.HOLD),
        ("background", S, False, Path.ASYNC),
        ("bulk", S, False, Path.SHED),
    ],
)
def test_choose_path(tier, mode, prefer_async, expected):
    assert choose_path(TIERS[tier], mode, prefer_async, top_priority=0) is expected


def test_in_shed_mode_every_tier_of_the_top_priority_stays_sync():
    also_urgent = TierConfig(priority=0, deferrable=True)
    assert choose_path(also_urgent, S, False, top_priority=0) is Path.SYNC
    assert choose_path(TierConfig(priority=1), S, False, top_priority=1) is Path.SYNC


@pytest.mark.parametrize(
    "header,expected",
    [
        (None, False),
        ("", False),
        ("respond-async", True),
        ("Respond-Async", True),
        ("respond-async, wait=10", True),
        ("wait=10, respond-async", True),
        ("handling=lenient,respond-async", True),
        (" respond-async ", True),
        ("respond-async=1", True),
        ("return=minimal", False),
        ("respond-asynchronously", False),
        ("wait=respond-async", False),
    ],
)
def test_prefers_async(header, expected):
    assert prefers_async(header) is expected
