"""Operating modes and their order of severity."""

from __future__ import annotations

from enum import Enum


class Mode(str, Enum):
    NORMAL = "normal"
    DEGRADED = "degraded"
    SHED = "shed"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Mode.NORMAL: 0, Mode.DEGRADED: 1, Mode.SHED: 2}


def most_severe(*modes: Mode) -> Mode:
    return max(modes, key=lambda m: m.rank, default=Mode.NORMAL)
