"""Always-valid statistics for online experiments: intervals that stay correct however often
someone looks at the report.

Every interval here is a *confidence sequence*: with probability at least 1 − α it contains the
true value at every moment of the experiment at once, so reading the report daily and stopping
when it says so does not inflate the error rate the way repeated fixed-sample tests do.

The boundary is the normal-mixture one (Robbins 1970; the mixture SPRT of Johari, Pekelis and
Walsh, "Always valid inference", 2017, used in the asymptotic form of Waudby-Smith, Arbour,
Sinha, Kennedy and Ramdas, "Time-uniform central limit theory and asymptotic confidence
sequences", 2024): for an estimate with variance v = σ²/n,

    half-width = sqrt( v (v + τ²)/τ² · (2 log(1/α) + log((v + τ²)/v)) ),  τ² = ρ² σ²,

where ρ is fixed in advance so the boundary is tightest at the planned sample size. A difference
of two independent arms is one estimate with v = σ_a²/n_a + σ_b²/n_b.

The sample-ratio-mismatch check is the sequential multinomial test of Lindon and Malek
("Anytime-valid inference for multinomial count data", 2022): a Dirichlet-multinomial Bayes
factor against the split the rules promise, which is an e-value, so it too may be read at
every moment.

Pure functions of counts and sums: the report (console.experiments.report) feeds them from the
usage rollups and the judged production samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# The planned number of observations per arm the boundary is tuned for; any n is valid, this
# is only where the interval is tightest.
PLANNED_N = 2_000


def rho_squared(alpha: float, planned_n: int = PLANNED_N) -> float:
    """ρ² that makes the boundary tightest at `planned_n` (Waudby-Smith et al., eq. 2.6)."""
    a = -2 * math.log(alpha)
    return (a + math.log(a + 1)) / planned_n


def half_width(v: float, sigma2: float, alpha: float, planned_n: int = PLANNED_N) -> float:
    """Half-width of the (1 − α) confidence sequence for an estimate with variance `v` whose
    per-observation variance is `sigma2`."""
    if v <= 0 or sigma2 <= 0:
        return 0.0
    tau2 = rho_squared(alpha, planned_n) * sigma2
    return math.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((v + tau2) / v)))


@dataclass(frozen=True)
class Arm:
    """A metric's data in one arm: n observations, their mean and their variance (per
    observation). `quantiles` holds a latency histogram instead, when the metric is one."""

    n: int
    mean: float | None
    var: float = 0.0


def mean_interval(arm: Arm, alpha: float) -> tuple[float, float] | None:
    if not arm.n or arm.mean is None:
        return None
    h = half_width(arm.var / arm.n, arm.var, alpha)
    return (arm.mean - h, arm.mean + h)


def difference_interval(control: Arm, treatment: Arm, alpha: float) -> tuple[float, float] | None:
    """The always-valid interval for treatment − control."""
    if not control.n or not treatment.n or control.mean is None or treatment.mean is None:
        return None
    v = control.var / control.n + treatment.var / treatment.n
    total = control.n + treatment.n
    # The per-unit variance of the difference when the traffic keeps splitting as it has.
    sigma2 = v * total
    h = half_width(v, sigma2, alpha, planned_n=2 * PLANNED_N)
    d = treatment.mean - control.mean
    return (d - h, d + h)


def bernoulli(successes: int, n: int) -> Arm:
    """A share. Its variance is taken at (x + 1)/(n + 2), never 0: 0 errors in 200 requests is
    not proof the rate is exactly 0, so the interval keeps a width."""
    if not n:
        return Arm(0, None)
    p = successes / n
    smoothed = (successes + 1) / (n + 2)
    return Arm(n, p, smoothed * (1 - smoothed))


def from_sums(n: int, total: float, squares: float) -> Arm:
    """An arm from a count, a sum and a sum of squares (the rollups keep all three)."""
    if not n:
        return Arm(0, None)
    mean = total / n
    return Arm(n, mean, max(squares / n - mean * mean, 0.0))


# ---------------------------------------------------------------- quantiles


def histogram_quantile(counts: Sequence[int], bounds: Sequence[float], p: float) -> float | None:
    """The p-quantile (0..1) of a latency histogram: bucket n holds values below bounds[n]
    (the last bucket is open). Linear within a bucket; the open bucket answers its lower
    bound, the most that can be said of it."""
    total = sum(counts)
    if not total:
        return None
    p = min(max(p, 0.0), 1.0)
    rank = p * total
    running = 0.0
    for n, count in enumerate(counts):
        if count and running + count >= rank:
            lower = bounds[n - 1] if n else 0.0
            if n >= len(bounds):
                return float(lower)
            return lower + (bounds[n] - lower) * (rank - running) / count
        running += count
    return float(bounds[-1])


def quantile_interval(
    counts: Sequence[int], bounds: Sequence[float], p: float, alpha: float
) -> tuple[float, float, float] | None:
    """(estimate, low, high) for the p-quantile. The share of observations at or below the true
    quantile is a Bernoulli mean p, so its confidence sequence [p − h, p + h] maps to the
    quantile's through the histogram."""
    n = sum(counts)
    if not n:
        return None
    var = p * (1 - p)
    h = half_width(var / n, var, alpha)
    return (
        histogram_quantile(counts, bounds, p),
        histogram_quantile(counts, bounds, p - h),
        histogram_quantile(counts, bounds, p + h),
    )


# ---------------------------------------------------------------- sample ratio mismatch


def srm_bayes_factor(
    observed: Sequence[int], expected: Sequence[float], concentration: float = 100.0
) -> float:
    """The Dirichlet-multinomial Bayes factor of "the split is not `expected`" against "it is"
    (Lindon and Malek, 2022). Under the expected split it is a nonnegative martingale with mean
    1, so P(it ever exceeds 1/α) ≤ α: the check may run at every look."""
    total = sum(expected)
    shares = [e / total for e in expected]
    prior = [concentration * s for s in shares]
    n = sum(observed)
    log_bf = (
        math.lgamma(sum(prior))
        - math.lgamma(sum(prior) + n)
        + sum(math.lgamma(a + x) - math.lgamma(a) for a, x in zip(prior, observed, strict=True))
        - sum(x * math.log(s) for x, s in zip(observed, shares, strict=True) if x)
    )
    return math.exp(min(log_bf, 700.0))
