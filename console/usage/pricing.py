"""Prices in effect at a time, with tiers: cost is always computed here, never trusted from
the client."""

from __future__ import annotations

from bisect import bisect_right
from decimal import Decimal

from console.usage.models import PricePoint

MILLION = Decimal(1_000_000)


def cost_of(
    point: PricePoint | None, input_tokens: int, cached_tokens: int, output_tokens: int
) -> Decimal:
    if point is None:
        return Decimal(0)
    rates = (point.input_per_1m, point.cached_input_per_1m, point.output_per_1m)
    for tier in sorted(point.tiers or [], key=lambda t: t["above_input_tokens"]):
        if input_tokens > tier["above_input_tokens"]:
            rates = (
                Decimal(str(tier["input_per_1m"])),
                Decimal(str(tier.get("cached_input_per_1m", tier["input_per_1m"]))),
                Decimal(str(tier["output_per_1m"])),
            )
    cached = min(cached_tokens, input_tokens)
    total = (input_tokens - cached) * rates[0] + cached * rates[1] + output_tokens * rates[2]
    return (total / MILLION).quantize(Decimal("0.00000001"))


class PriceBook:
    """All price points of an application in memory, for pricing a batch without a query per
    event."""

    def __init__(self, application_id: int):
        self.points: dict[str, list[PricePoint]] = {}
        for point in PricePoint.objects.filter(application_id=application_id).order_by(
            "model", "effective_from"
        ):
            self.points.setdefault(point.model, []).append(point)
        self.starts = {m: [p.effective_from for p in ps] for m, ps in self.points.items()}

    def at(self, model: str, when) -> PricePoint | None:
        starts = self.starts.get(model)
        if not starts:
            return None
        index = bisect_right(starts, when) - 1
        return self.points[model][index] if index >= 0 else None

    def cost(
        self, model: str, when, input_tokens: int, cached_tokens: int, output_tokens: int
    ) -> Decimal:
        return cost_of(self.at(model, when), input_tokens, cached_tokens, output_tokens)

    def savings(self, model: str, when, cached_tokens: int) -> Decimal:
        """What cached input saved against the full input price."""
        point = self.at(model, when)
        if point is None or not cached_tokens:
            return Decimal(0)
        return (
            cached_tokens * (point.input_per_1m - point.cached_input_per_1m) / MILLION
        ).quantize(Decimal("0.00000001"))
