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


ZERO = Decimal(0)
CENT_MILLIONTH = Decimal("0.00000001")


def _rates(point: PricePoint) -> tuple[tuple, list[tuple[int, tuple]]]:
    """A point's (input, cached input, output) rates per million tokens, and its tiers as
    (above_input_tokens, rates) in ascending order: what cost_of works out per call."""
    tiers = [
        (
            tier["above_input_tokens"],
            (
                Decimal(str(tier["input_per_1m"])),
                Decimal(str(tier.get("cached_input_per_1m", tier["input_per_1m"]))),
                Decimal(str(tier["output_per_1m"])),
            ),
        )
        for tier in sorted(point.tiers or [], key=lambda t: t["above_input_tokens"])
    ]
    return (point.input_per_1m, point.cached_input_per_1m, point.output_per_1m), tiers


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
        self.rates = {m: [_rates(p) for p in ps] for m, ps in self.points.items()}

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

    def cost_and_savings(
        self, model: str, when, input_tokens: int, cached_tokens: int, output_tokens: int
    ) -> tuple[Decimal, Decimal]:
        """`cost` and `savings` at once, from rates worked out when the book was read (this
        runs for every event ingested); the same figures to the last digit."""
        starts = self.starts.get(model)
        index = bisect_right(starts, when) - 1 if starts else -1
        if index < 0:
            return ZERO, ZERO
        base, tiers = self.rates[model][index]
        rates = base
        for above, tier_rates in tiers:
            if input_tokens > above:
                rates = tier_rates
        cached = min(cached_tokens, input_tokens)
        total = (input_tokens - cached) * rates[0] + cached * rates[1] + output_tokens * rates[2]
        cost = (total / MILLION).quantize(CENT_MILLIONTH)
        if not cached_tokens:
            return cost, ZERO
        savings = (cached_tokens * (base[0] - base[1]) / MILLION).quantize(CENT_MILLIONTH)
        return cost, savings
