"""Decisions about a paired difference: superiority, inferiority and equivalence tests, Holm's
step-down correction, and the power of each decision (minimum detectable effect, seeds needed).

Everything here works on summary numbers of paired differences (n pairs, mean, sample SD) as
numpy arrays, one entry per compared level, so one call decides thousands of levels.

Per level, with ``se = sd / sqrt(n)`` and t quantiles of ``n - 1`` degrees of freedom:
  * *better*: one-sided p of H0 "gain <= 0" below ``alpha / 2`` (the two-sided (1 - alpha) CI lies
    above 0) and the estimated gain at least ``margin`` (a trivial gain is not "better");
  * *worse*: the mirror image (CI below 0 and estimate at most ``-margin``);
  * *equivalent*: two one-sided tests (TOST) of H0 "gain <= -margin" and H0 "gain >= margin",
    each at ``alpha``: the (1 - 2 alpha) CI (90% at the default 0.05) lies inside (-margin, margin);
  * *undecided*: none of these; *untestable*: fewer than two pairs.
The three p-values of a family of levels (one setting) are Holm-adjusted within the family before
the thresholds are applied (``holm``).

Power uses the noncentral t distribution (``scipy.special.nctdtr``, the CDF of
``scipy.stats.nct``) with the observed SD standing for the true one. Decisions that need two
conditions at once (better: significant *and* estimate >= margin; equivalent: both TOST halves)
use the Bonferroni lower bound P(A and B) >= P(A) + P(B) - 1, so "seeds needed" errs on the side
of more seeds. Powers are per level at the alpha given (the analysis passes alpha / levels:
Bonferroni, which Holm never needs more than).
"""

from __future__ import annotations

import numpy as np
from scipy.special import nctdtr, ndtr, stdtr, stdtrit

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 1000  # seeds-needed searches stop here (reported as "more than MAX_SEEDS")
OUTCOMES = ("better", "equivalent", "worse", "undecided", "untestable")


def _arrays(*xs):
    return [np.asarray(x, dtype=float) for x in xs]


def _nct_cdf(df, nc, t):
    """P(T <= t) for T noncentral t (``df``, noncentrality ``nc``). scipy 1.17's ``nctdtr`` returns
    NaN in parts of the far tails (e.g. df 1, nc -8.49, t 12.7: the answer is 1 - 3e-16), so a NaN
    is replaced by the mirror image P(T <= t) = 1 - P(-T <= -t) (-T is noncentral t with -nc), and
    where that is NaN too, by the normal approximation (there both are within 1e-12 of 0 or 1)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        v = nctdtr(df, nc, t)
        v = np.where(np.isnan(v), 1.0 - nctdtr(df, -nc, -t), v)
        return np.where(np.isnan(v) & ~np.isnan(nc) & ~np.isnan(t), ndtr(t - nc), v)


def one_sided_p(n, mean, sd, null: float | np.ndarray = 0.0, upper: bool = True) -> np.ndarray:
    """p of the one-sided paired t-test of H0 "true mean <= null" (``upper``; else ">= null").
    A zero SD decides by the sign of (mean - null); fewer than two pairs give NaN."""
    n, mean, sd, null = _arrays(n, mean, sd, null)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (mean - null) / (sd / np.sqrt(n))
        if not upper:
            t = -t
        p = stdtr(np.maximum(n - 1, 1), -t)
    diff = (mean - null) if upper else (null - mean)
    p = np.where(sd == 0, np.where(diff > 0, 0.0, 1.0), p)
    return np.where((n < 2) | np.isnan(mean) | np.isnan(sd), np.nan, p)


def t_interval(n, mean, sd, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided t-interval of the mean (NaN for fewer than two pairs)."""
    n, mean, sd = _arrays(n, mean, sd)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stdtrit(np.maximum(n - 1, 1), 0.5 + confidence / 2) * sd / np.sqrt(n)
    half = np.where(n < 2, np.nan, half)
    return mean - half, mean + half


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values of one family (NaN entries are not tests and stay NaN)."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    k = int(ok.sum())
    if k == 0:
        return out
    vals = p[ok]
    order = np.argsort(vals, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((k - np.arange(k)) * vals[order]))
    res = np.empty(k)
    res[order] = adj
    out[ok] = res
    return out


def level_pvalues(n, mean, sd, margin: float) -> dict[str, np.ndarray]:
    """Unadjusted p-values of the three decisions (see the module docstring)."""
    p_better = one_sided_p(n, mean, sd, 0.0, upper=True)
    p_worse = one_sided_p(n, mean, sd, 0.0, upper=False)
    p_equiv = np.fmax(one_sided_p(n, mean, sd, -margin, upper=True), one_sided_p(n, mean, sd, margin, upper=False))
    p_equiv = np.where(np.isnan(p_better), np.nan, p_equiv)
    return {"p_better": p_better, "p_worse": p_worse, "p_equivalent": p_equiv}


def classify(mean, p_better, p_worse, p_equivalent, margin: float, alpha: float = ALPHA) -> np.ndarray:
    """Outcome of each level from (already adjusted, if wanted) p-values."""
    mean, p_better, p_worse, p_equivalent = _arrays(mean, p_better, p_worse, p_equivalent)
    untestable = np.isnan(p_better)
    better = (p_better < alpha / 2) & (mean >= margin)
    worse = (p_worse < alpha / 2) & (mean <= -margin)
    equivalent = p_equivalent < alpha
    return np.select([untestable, better, worse, equivalent], ["untestable", "better", "worse", "equivalent"],
                     "undecided")


# ----------------------------------------------------------------------------- power


def power_significant(n, delta, sd, alpha: float = ALPHA) -> np.ndarray:
    """P(the two-sided (1 - alpha) CI lies above 0) when the true gain is ``delta`` (> 0)."""
    n, delta, sd = _arrays(n, delta, sd)
    df = np.maximum(n - 1, 1)
    tc = stdtrit(df, 1 - alpha / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - _nct_cdf(df, delta * np.sqrt(n) / sd, tc)


def power_better(n, delta, sd, margin: float, alpha: float = ALPHA) -> np.ndarray:
    """Lower bound of P(level is "better") at true gain ``delta``: significant and estimate >= margin."""
    n, delta, sd = _arrays(n, delta, sd)
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate_ok = ndtr((delta - margin) * np.sqrt(n) / sd)  # the mean of n pairs is normal
    return np.clip(power_significant(n, delta, sd, alpha) + estimate_ok - 1.0, 0.0, 1.0)


def power_equivalent(n, delta, sd, margin: float, alpha: float = ALPHA) -> np.ndarray:
    """Lower bound of P(level is "equivalent") at true gain ``delta`` (|delta| < margin)."""
    n, delta, sd = _arrays(n, delta, sd)
    df = np.maximum(n - 1, 1)
    tc = stdtrit(df, 1 - alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        above_lower = 1.0 - _nct_cdf(df, (delta + margin) * np.sqrt(n) / sd, tc)
        below_upper = _nct_cdf(df, (delta - margin) * np.sqrt(n) / sd, -tc)
    return np.clip(above_lower + below_upper - 1.0, 0.0, 1.0)


def direction(delta, margin: float) -> np.ndarray:
    """The decision more seeds would most likely reach if the true gain were ``delta``."""
    delta = np.asarray(delta, dtype=float)
    return np.select([np.isnan(delta), delta >= margin, delta <= -margin], ["untestable", "better", "worse"],
                     "equivalent")


def decision_power(n, delta, sd, margin: float, alpha: float = ALPHA) -> np.ndarray:
    """Power of the decision ``direction(delta)`` at ``n`` pairs."""
    n, delta, sd = _arrays(n, delta, sd)
    d = direction(delta, margin)
    out = np.where(d == "better", power_better(n, delta, sd, margin, alpha), np.nan)
    out = np.where(d == "worse", power_better(n, -delta, sd, margin, alpha), out)
    return np.where(d == "equivalent", power_equivalent(n, delta, sd, margin, alpha), out)


def seeds_needed(delta, sd, margin: float, power: float = POWER, alpha: float = ALPHA) -> np.ndarray:
    """Smallest number of seed pairs at which ``decision_power`` reaches ``power`` (bisection over
    n, all entries at once); ``inf`` if not reached by ``MAX_SEEDS``, NaN where sd or delta is NaN."""
    delta, sd = _arrays(delta, sd)
    lo = np.full(delta.shape, 1.0)  # power(lo) < target (one pair cannot decide)
    hi = np.full(delta.shape, float(MAX_SEEDS))
    reach = decision_power(hi, delta, sd, margin, alpha) >= power
    zero_sd = (sd == 0) & ~np.isnan(delta)  # no noise: two pairs decide unless delta sits on the margin
    for _ in range(int(np.ceil(np.log2(MAX_SEEDS))) + 1):
        mid = np.floor((lo + hi) / 2)
        ok = decision_power(mid, delta, sd, margin, alpha) >= power
        hi = np.where(ok & (mid > lo), mid, hi)
        lo = np.where(~ok & (mid < hi), mid, lo)
    out = np.where(reach, hi, np.inf)
    out = np.where(zero_sd, 2.0, out)
    return np.where(np.isnan(delta) | np.isnan(sd), np.nan, out)


def minimum_detectable_effect(n, sd, power: float = POWER, alpha: float = ALPHA) -> np.ndarray:
    """Smallest true gain whose CI lies above 0 with probability ``power`` at ``n`` pairs
    (noncentral t, bisection); NaN for fewer than two pairs."""
    n, sd = _arrays(n, sd)
    lo, hi = np.zeros(n.shape), 100.0 * np.where(sd > 0, sd, 1.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        ok = power_significant(n, mid, sd, alpha) >= power
        hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
    return np.where((n < 2) | np.isnan(sd), np.nan, np.where(sd == 0, 0.0, hi))
