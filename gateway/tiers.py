"""Tier decision: which tier a request belongs to, and which path serves it.

Both functions are pure: the HTTP layer passes in what it read from the
request, the client, the tier table and the effective mode.
"""

from __future__ import annotations

from enum import Enum

from gateway.auth import Client
from gateway.config import TierConfig
from gateway.errors import InvalidRequest, PermissionDenied
from gateway.severity import Mode


class Path(str, Enum):
    SYNC = "sync"  # served now, through admission and the router
    ASYNC = "async"  # queued; the client gets 202 and a job
    HOLD = "hold"  # queued; the connection is held up to hold_s
    SHED = "shed"  # refused: the mode sheds this tier and it cannot wait


def choose_tier(client: Client, header: str | None, tiers: dict[str, TierConfig]) -> str:
    """The tier named by ``X-Gateway-Tier``, else the client's default."""
    if not header:
        return client.default_tier
    name = header.strip()
    if name not in tiers:
        raise InvalidRequest(f"Unknown tier {name!r}.", param="X-Gateway-Tier", code="unknown_tier")
    if name not in client.tiers:
        raise PermissionDenied(f"Client {client.name!r} may not use tier {name!r}.", param="X-Gateway-Tier")
    return name


def choose_path(tier: TierConfig, mode: Mode, prefer_async: bool, top_priority: int) -> Path:
    """The path for a request of ``tier`` under the effective ``mode``.

    ``top_priority`` is the lowest priority value among all tiers: in ``shed``
    mode only those tiers stay synchronous.
    """
    if prefer_async or tier.async_:
        return Path.ASYNC
    if mode is Mode.SHED and tier.priority != top_priority:
        return Path.HOLD if tier.deferrable else Path.SHED
    if mode is Mode.DEGRADED and tier.deferrable:
        return Path.HOLD
    return Path.SYNC


def prefers_async(prefer_header: str | None) -> bool:
    """RFC 7240: ``Prefer: respond-async`` (possibly among other preferences)."""
    if not prefer_header:
        return False
    return any(p.split("=", 1)[0].strip().lower() == "respond-async" for p in prefer_header.split(","))
