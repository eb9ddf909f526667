"""Cost of a request from its usage and the model's pricing."""

from __future__ import annotations

from enum import Enum

from gateway.config import PricingConfig
from gateway.providers.base import Usage


class Pricing(str, Enum):
    REALTIME = "realtime"
    BATCH = "batch"


def cost_usd(pricing: PricingConfig, usage: Usage, kind: Pricing) -> float:
    """Dollars for ``usage`` at realtime prices, or at the batch discount."""
    usd = (usage.input_tokens * pricing.input_per_mtok + usage.output_tokens * pricing.output_per_mtok) / 1_000_000
    if kind is Pricing.BATCH:
        usd *= 1.0 - pricing.batch_discount
    return usd
