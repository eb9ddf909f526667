"""Per-target circuit breaker: a small state machine driven by outcomes and the clock.

``now`` is always passed in, so the transitions are pure and table-tested.
"""

from __future__ import annotations

from enum import Enum


class CircuitState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Circuit:
    """Opens after ``threshold`` consecutive failures; after ``cooldown_s`` lets one probe through."""

    __slots__ = ("threshold", "cooldown_s", "state", "failures", "opened_at")

    def __init__(self, threshold: int, cooldown_s: float) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.opened_at = 0.0

    def allow(self, now: float) -> bool:
        """Whether a call may go to this target now. Moving to half-open admits exactly one probe."""
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN and now - self.opened_at >= self.cooldown_s:
            self.state = CircuitState.HALF_OPEN
            return True
        return False

    def success(self) -> None:
        self.state = CircuitState.CLOSED
        self.failures = 0

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.state is CircuitState.HALF_OPEN or self.failures >= self.threshold:
            self.state = CircuitState.OPEN
            self.opened_at = now

    def abandon(self) -> None:
        """A half-open probe ended without a verdict (the client went away): let another probe try."""
        if self.state is CircuitState.HALF_OPEN:
            self.state = CircuitState.OPEN

    def retry_in(self, now: float) -> float:
        if self.state is CircuitState.CLOSED:
            return 0.0
        return max(self.cooldown_s - (now - self.opened_at), 0.0)
