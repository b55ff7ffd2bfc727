"""analysis/paired_tests.py against an independent computation over whole grids of inputs,
edge cases included (one pair, zero SD, NaN, ties, values on a threshold): scipy.stats for every
p-value, interval and power, and brute force for the searches. mutmut's survivors of the
single-point tests in test_analysis_decisions.py were in exactly these corners."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from analysis import paired_tests as pt

NS = (1, 2, 3, 5, 12)
MEANS = (-0.02, -0.01, 0.0, 0.004, 0.01, 0.03)
SDS = (0.0, 0.005, 0.013)
NULLS = (-0.01, 0.0, 0.01)
MARGIN = 0.01


def ref_one_sided_p(n, mean, sd, null, upper):
    if n < 2 or math.isnan(mean) or math.isnan(sd):
        return math.nan
    diff = (mean - null) if upper else (null - mean)
    if sd == 0:
        return 0.0 if diff > 0 else 1.0
    return stats.t.sf(diff / (sd / math.sqrt(n)), n - 1)


def test_one_sided_p_over_a_grid():
    grid = list(itertools.product(NS, MEANS, SDS, NULLS, (True, False)))
    for n, mean, sd, null, upper in grid:
        got = pt.one_sided_p(n, mean, sd, null, upper=upper).item()
        want = ref_one_sided_p(n, mean, sd, null, upper)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12, nan_ok=True), (n, mean, sd, null, upper)
    # vectorised call == the scalar calls, NaN inputs give NaN
    n, mean, sd = np.array([3, 5, 2]), np.array([0.01, math.nan, 0.0]), np.array([0.01, 0.01, math.nan])
    assert np.isnan(pt.one_sided_p(n, mean, sd)[1:]).all()
    assert pt.one_sided_p(n, mean, sd)[0] == pytest.approx(ref_one_sided_p(3, 0.01, 0.01, 0.0, True))


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
def test_t_interval_over_a_grid(confidence):
    for n, mean, sd in itertools.product(NS, MEANS, SDS):
        lo, hi = (x.item() for x in pt.t_interval(n, mean, sd, confidence))
        if n < 2:
            assert math.isnan(lo) and math.isnan(hi)
            continue
        want = stats.t.interval(confidence, n - 1, loc=mean, scale=sd / math.sqrt(n)) if sd else (mean, mean)
        assert (lo, hi) == pytest.approx(want, rel=1e-9, abs=1e-12), (n, mean, sd, confidence)


def ref_holm(p):
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = [i for i in range(len(p)) if not math.isnan(p[i])]
    k = len(idx)
    ranked = sorted(idx, key=lambda i: (p[i], i))
    running = 0.0
    for j, i in enumerate(ranked):
        running = max(running, min(1.0, (k - j) * p[i]))
        out[i] = running
    return out


def test_holm_with_nans_ties_and_the_cap_at_one():
    rng = np.random.default_rng(7)
    cases = [[], [math.nan], [0.01], [0.02, 0.02, 0.02], [0.5, 0.6, 0.9], [math.nan, 0.03, math.nan, 0.001, 0.03]]
    cases += [list(np.where(rng.uniform(size=m) < 0.2, np.nan, rng.uniform(0, 0.5, m))) for m in range(1, 9)
              for _ in range(5)]
    for p in cases:
        np.testing.assert_allclose(pt.holm(np.array(p, dtype=float)), ref_holm(p), rtol=1e-12, equal_nan=True)


def ref_classify(mean, pb, pw, pe, margin, alpha):
    if math.isnan(pb):
        return "untestable"
    if pb < alpha / 2 and mean >= margin:
        return "better"
    if pw < alpha / 2 and mean <= -margin:
        return "worse"
    if pe < alpha:
        return "equivalent"
    return "undecided"


@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_classify_on_and_around_every_threshold(alpha):
    means = (-0.02, -MARGIN, -0.005, 0.0, 0.005, MARGIN, 0.02)
    ps = (0.0, alpha / 4, alpha / 2, alpha * 0.75, alpha, 0.5, 1.0)
    for mean, pb, pw, pe in itertools.product(means, ps, ps, ps):
        assert pt.classify(mean, pb, pw, pe, MARGIN, alpha).item() == ref_classify(mean, pb, pw, pe, MARGIN, alpha)
    assert pt.classify(0.0, math.nan, 0.1, 0.1, MARGIN, alpha).item() == "untestable"


def test_level_pvalues_are_the_three_one_sided_tests():
    for n, mean, sd in itertools.product(NS, MEANS, SDS):
        p = pt.level_pvalues(n, mean, sd, MARGIN)
        assert p["p_better"].item() == pytest.approx(ref_one_sided_p(n, mean, sd, 0.0, True), nan_ok=True)
        assert p["p_worse"].item() == pytest.approx(ref_one_sided_p(n, mean, sd, 0.0, False), nan_ok=True)
        tost = max(ref_one_sided_p(n, mean, sd, -MARGIN, True), ref_one_sided_p(n, mean, sd, MARGIN, False))
        assert p["p_equivalent"].item() == pytest.approx(tost, nan_ok=True), (n, mean, sd)


def nct_cdf(t, df, nc):
    """P(T <= t), T noncentral t: scipy.stats.nct, and where that is NaN (parts of the far tails in
    scipy 1.17), the definition T = (Z + nc) / sqrt(V / df), V chi-square, integrated numerically."""
    value = stats.nct.cdf(t, df, nc)
    if math.isnan(value):
        value = integrate.quad(lambda v: stats.norm.cdf(t * math.sqrt(v / df) - nc) * stats.chi2.pdf(v, df),
                               0, math.inf, epsabs=1e-13, limit=200)[0]
    return value


def ref_power_significant(n, delta, sd, alpha):
    df = max(n - 1, 1)
    return 1.0 - nct_cdf(stats.t.ppf(1 - alpha / 2, df), df, delta * math.sqrt(n) / sd)


def ref_power_better(n, delta, sd, margin, alpha):
    estimate_ok = stats.norm.cdf((delta - margin) * math.sqrt(n) / sd)
    return min(1.0, max(0.0, ref_power_significant(n, delta, sd, alpha) + estimate_ok - 1.0))


def ref_power_equivalent(n, delta, sd, margin, alpha):
    df = max(n - 1, 1)
    tc = stats.t.ppf(1 - alpha, df)
    above = 1.0 - nct_cdf(tc, df, (delta + margin) * math.sqrt(n) / sd)
    below = nct_cdf(-tc, df, (delta - margin) * math.sqrt(n) / sd)
    return min(1.0, max(0.0, above + below - 1.0))


def ref_decision_power(n, delta, sd, margin, alpha):
    if delta >= margin:
        return ref_power_better(n, delta, sd, margin, alpha)
    if delta <= -margin:
        return ref_power_better(n, -delta, sd, margin, alpha)
    return ref_power_equivalent(n, delta, sd, margin, alpha)


@pytest.mark.parametrize("alpha", [0.05, 0.05 / 3])
def test_powers_match_scipy_noncentral_t(alpha):
    for n, delta, sd in itertools.product((2, 3, 8, 30), (-0.03, -MARGIN, -0.004, 0.0, 0.004, MARGIN, 0.03),
                                          (0.005, 0.013)):
        ctx = (n, delta, sd, alpha)
        assert pt.power_significant(n, delta, sd, alpha).item() == pytest.approx(
            ref_power_significant(n, delta, sd, alpha), abs=1e-7), ctx
        assert pt.power_better(n, delta, sd, MARGIN, alpha).item() == pytest.approx(
            ref_power_better(n, delta, sd, MARGIN, alpha), abs=1e-7), ctx
        assert pt.power_equivalent(n, delta, sd, MARGIN, alpha).item() == pytest.approx(
            ref_power_equivalent(n, delta, sd, MARGIN, alpha), abs=1e-7), ctx
        assert pt.decision_power(n, delta, sd, MARGIN, alpha).item() == pytest.approx(
            ref_decision_power(n, delta, sd, MARGIN, alpha), abs=1e-7, nan_ok=True), ctx
    assert np.isnan(pt.decision_power(5, math.nan, 0.01, MARGIN, alpha)).item()


def test_direction_on_the_margin():
    deltas = [math.nan, -0.02, -MARGIN, -0.009, 0.0, 0.009, MARGIN, 0.02]
    want = ["untestable", "worse", "worse", "equivalent", "equivalent", "equivalent", "better", "better"]
    assert list(pt.direction(deltas, MARGIN)) == want


@pytest.mark.parametrize(("power", "alpha"), [(0.8, pt.ALPHA), (0.9, pt.ALPHA), (0.8, pt.ALPHA / 3)])
def test_seeds_needed_is_the_first_n_reaching_the_power(power, alpha):
    """Brute force over n with scipy's powers: the smallest n >= 2 whose power reaches the target
    (0.0005: so little noise that two pairs already decide)."""
    for delta, sd in itertools.product((-0.03, -0.002, 0.0, 0.005, 0.02, 0.05), (0.0005, 0.005, 0.013)):
        got = pt.seeds_needed(delta, sd, MARGIN, power=power, alpha=alpha).item()
        want = next((n for n in range(2, pt.MAX_SEEDS + 1)
                     if ref_decision_power(n, delta, sd, MARGIN, alpha) >= power), math.inf)
        assert got == want, (delta, sd, power, alpha)
    assert pt.seeds_needed(0.05, 0.0005, MARGIN).item() == 2
    assert pt.seeds_needed(0.02, 0.0, MARGIN).item() == 2  # no noise: two pairs decide
    assert math.isnan(pt.seeds_needed(math.nan, 0.01, MARGIN).item())
    assert math.isnan(pt.seeds_needed(0.01, math.nan, MARGIN).item())
    vec = pt.seeds_needed(np.array([0.0, 0.02]), np.array([0.013, 0.005]), MARGIN)
    assert list(vec) == [pt.seeds_needed(0.0, 0.013, MARGIN).item(), pt.seeds_needed(0.02, 0.005, MARGIN).item()]


@pytest.mark.parametrize(("power", "alpha"), [(0.5, pt.ALPHA), (0.8, pt.ALPHA), (0.95, pt.ALPHA), (0.8, 0.01)])
def test_minimum_detectable_effect_is_the_root_of_the_power(power, alpha):
    for n, sd in itertools.product((2, 3, 6, 20), (0.005, 0.013, 0.05)):
        want = optimize.brentq(lambda d, n=n, sd=sd: ref_power_significant(n, d, sd, alpha) - power,
                               0.0, 200 * sd, xtol=1e-14)
        got = pt.minimum_detectable_effect(n, sd, power=power, alpha=alpha).item()
        assert got == pytest.approx(want, rel=1e-6), (n, sd, alpha)
    assert pt.minimum_detectable_effect(5, 0.0).item() == 0.0
    assert math.isnan(pt.minimum_detectable_effect(1, 0.01).item())
    assert math.isnan(pt.minimum_detectable_effect(5, math.nan).item())
