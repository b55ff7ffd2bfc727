"""Verdicts that can say "no": the decision tests and their power against scipy.stats and simulation,
and verdicts on stores written by the real writer with known effects (zero gain, clear gain, divergence)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis import connect, rethinking_lr
from analysis import paired_tests as pt
from analysis.report import build_report
from analysis.synthetic import channels_kept, write_campaign
from orchestrator.store import Store

MARGIN = 0.01
NOISE_SD = 0.013  # paired SD of 1.3 accuracy points, as on MNIST-1D's 1,000-example test set


@pytest.mark.parametrize("diffs", [np.array([0.01, 0.03, -0.005, 0.02]), np.array([-0.004, 0.002, 0.001, -0.003, 0.0])])
def test_p_values_and_intervals_match_scipy(diffs):
    n, mean, sd = len(diffs), diffs.mean(), diffs.std(ddof=1)
    p = pt.level_pvalues(n, mean, sd, MARGIN)
    assert p["p_better"] == pytest.approx(stats.ttest_1samp(diffs, 0.0, alternative="greater").pvalue)
    assert p["p_worse"] == pytest.approx(stats.ttest_1samp(diffs, 0.0, alternative="less").pvalue)
    tost = max(stats.ttest_1samp(diffs, -MARGIN, alternative="greater").pvalue,
               stats.ttest_1samp(diffs, MARGIN, alternative="less").pvalue)
    assert p["p_equivalent"] == pytest.approx(tost)
    lo, hi = pt.t_interval(n, mean, sd, 0.90)
    ref = stats.t.interval(0.90, n - 1, loc=mean, scale=stats.sem(diffs))
    assert (lo, hi) == pytest.approx(ref)
    # TOST at alpha rejects exactly when the 90% interval lies inside (-margin, margin)
    assert (tost < 0.05) == (-MARGIN < ref[0] and ref[1] < MARGIN)


def test_holm_matches_its_definition():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.uniform(0, 0.2, rng.integers(1, 7))
        k, order = len(p), np.argsort(p)
        expected = np.empty(k)
        running = 0.0
        for rank, i in enumerate(order):  # step-down: max over the smaller p-values of (k - j) p_(j)
            running = max(running, min(1.0, (k - rank) * p[i]))
            expected[i] = running
        np.testing.assert_allclose(pt.holm(p), expected)
    assert np.isnan(pt.holm(np.array([np.nan, 0.01])))[0] and pt.holm(np.array([np.nan, 0.01]))[1] == 0.01


def test_classify_rule():
    # mean, p_better, p_worse, p_equivalent -> outcome
    cases = [((0.03, 0.001, 0.999, 0.9), "better"), ((0.005, 0.001, 0.999, 0.9), "undecided"),  # gain < margin
             ((-0.03, 0.999, 0.001, 0.9), "worse"), ((0.002, 0.3, 0.7, 0.01), "equivalent"),
             ((0.002, 0.3, 0.7, 0.2), "undecided"), ((math.nan, math.nan, math.nan, math.nan), "untestable")]
    for (mean, pb, pw, pe), outcome in cases:
        assert pt.classify(mean, pb, pw, pe, MARGIN).item() == outcome


def test_power_matches_scipy_noncentral_t_and_simulation():
    n, delta, sd = 6, 0.02, 0.013
    tc = stats.t.ppf(0.975, n - 1)
    exact = stats.nct.sf(tc, n - 1, delta * math.sqrt(n) / sd)
    assert pt.power_significant(n, delta, sd) == pytest.approx(exact)
    mde = pt.minimum_detectable_effect(n, sd)
    assert stats.nct.sf(tc, n - 1, mde * math.sqrt(n) / sd) == pytest.approx(0.8, abs=1e-6)
    rng = np.random.default_rng(1)
    d = rng.normal(delta, sd, (20000, n))
    lo, _ = pt.t_interval(n, d.mean(1), d.std(1, ddof=1), 0.95)
    assert (lo > 0).mean() == pytest.approx(exact, abs=0.015)


@pytest.mark.parametrize("delta", [0.0, 0.004, 0.03, -0.03])
def test_seeds_needed_reach_the_power_in_simulation(delta):
    """At the seeds asked for, the decision the observed gain points to is reached at least 80% of the
    time (simulated paired differences); one seed fewer stays below the bound."""
    n = int(pt.seeds_needed(delta, NOISE_SD, MARGIN))
    assert 2 <= n < pt.MAX_SEEDS
    assert pt.decision_power(n, delta, NOISE_SD, MARGIN) >= 0.8 > pt.decision_power(n - 1, delta, NOISE_SD, MARGIN)
    rng = np.random.default_rng(2)
    d = rng.normal(delta, NOISE_SD, (4000, n))
    p = pt.level_pvalues(n, d.mean(1), d.std(1, ddof=1), MARGIN)
    outcome = pt.classify(d.mean(1), p["p_better"], p["p_worse"], p["p_equivalent"], MARGIN)
    assert (outcome == pt.direction(delta, MARGIN).item()).mean() >= 0.8 - 0.02
    assert math.isinf(pt.seeds_needed(MARGIN, NOISE_SD, MARGIN))  # a true gain on the margin is never decided


def _noisy(gain: float, levels: int):
    """Rewind = reinit + gain + noise: paired differences of SD NOISE_SD, independent per (level, seed)."""
    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, NOISE_SD / math.sqrt(2), (2, levels + 1, 1000))

    def accuracy(cell, reset, level, seed):
        base = 0.7 - 0.01 * level
        if reset == "dense":
            return base
        return base + noise[int(reset == "rewind"), level, seed] + (gain if reset == "rewind" else 0.0)
    return accuracy


CELL = dict(dataset="digits", arch="mlp", structure="unstructured", schedule="iterative", lr=0.1)
LEVELS = 3


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store(tmp_path_factory.mktemp("decisions") / "store")
    # the seeds the power rule asks for, at a true gain of 0 and 3 levels (Bonferroni alpha / 3)
    seeds0 = int(pt.seeds_needed(0.0, NOISE_SD, MARGIN, alpha=pt.ALPHA / LEVELS))
    write_campaign(s, "zero", [CELL], _noisy(0.0, LEVELS), seeds=range(seeds0), levels=LEVELS)
    write_campaign(s, "gain", [CELL], _noisy(0.04, LEVELS), seeds=range(5), levels=LEVELS)
    write_campaign(s, "few", [CELL], _noisy(0.0, LEVELS), seeds=range(3), levels=LEVELS)
    # rewind equals reinit, but diverges at level 2 for seeds 0 and 1 (having reached +5 points first)
    even = lambda cell, reset, level, seed: 0.7 + (0.05 if (reset, level) == ("rewind", 2) and seed < 2 else 0)  # noqa: E731
    write_campaign(s, "div", [CELL], even, seeds=range(5), levels=LEVELS,
                   diverges=lambda cell, reset, level, seed: reset == "rewind" and level == 2 and seed < 2)
    write_campaign(s, "struct", [CELL, dict(CELL, structure="structured")], _noisy(0.0, LEVELS), seeds=range(3),
                   levels=LEVELS)
    s.seeds0 = seeds0
    return s


def test_zero_gain_with_the_seeds_asked_for_says_no(store):
    res = rethinking_lr.analyse(connect(store), "zero")
    v = res.verdicts.iloc[0]
    assert v.verdict == "no" and v.equivalent >= 2, v.reason
    assert v.pairs == store.seeds0
    assert v.sd_diff == pytest.approx(NOISE_SD, rel=0.35)  # the pooled SD estimates the noise put in
    # the same data with 3 seeds: undecided, with the seeds needed said
    few = rethinking_lr.analyse(connect(store), "few").verdicts.iloc[0]
    assert few.verdict == "undecided" and few.equivalent == 0
    assert "seeds would decide" in few.reason and few.seeds_needed > 3


def test_clear_gain_says_yes(store):
    res = rethinking_lr.analyse(connect(store), "gain")
    v = res.verdicts.iloc[0]
    assert v.verdict == "yes" and v.better == LEVELS, v.reason
    assert v.mde80 < 0.04  # the gain put in is above what 5 seeds can detect
    comp = res.comparison
    assert (comp.outcome == "better").all() and (comp.p_better_holm >= comp.p_better).all()


def test_divergence_counts_against_its_side(store):
    res = rethinking_lr.analyse(connect(store), "div")
    comp = res.comparison.set_index("level")
    assert comp.loc[2, "n_pairs"] == 5 and comp.loc[2, "diverged_treatment"] == 2  # not dropped with its pair
    assert comp.loc[1, "diverged_treatment"] == 0 and comp.loc[2, "diverged_control"] == 0
    diffs = np.array([0.1 - 0.7] * 2 + [0.0] * 3)  # digits: 10 classes, a diverged run scores 0.1
    assert comp.loc[2, "diff_mean"] == pytest.approx(diffs.mean())
    assert comp.loc[2, "p_value"] == pytest.approx(stats.ttest_1samp(diffs, 0.0).pvalue)
    assert "2 diverged run(s) scored at chance accuracy" in comp.loc[2, "note"]
    v = res.verdicts.iloc[0]
    assert (v.diverged_treatment, v.diverged_control) == (2, 0)
    # dropping the diverged pairs would have shown a flawless tie at level 2 (0 +- 0): survivor bias
    survivors = res.runs[(res.runs.level == 2) & (res.runs.status == "done")]
    means = survivors.groupby("reset").best_test_accuracy.mean()
    assert means["rewind"] == pytest.approx(means["reinit"])


def test_report_shows_counts_power_and_the_rule(store, tmp_path):
    rep = build_report(store, "div", tmp_path / "r")
    row = rep.verdicts.iloc[0]
    assert row["diverged (rewind/reinit)"] == "2/0"
    assert row["better/equiv/worse/undecided"].count("/") == 3
    md = (tmp_path / "r" / "report.md").read_text()
    assert "two one-sided tests" in md and "Holm" in md and "chance accuracy" in md


def test_structured_levels_in_channels_and_travel_with_its_control(store, tmp_path):
    build_report(store, "struct", tmp_path / "r")
    acc = (tmp_path / "r" / "accuracy.csv").read_text().splitlines()
    header = acc[0].split(",")
    assert "channels %" in header
    rows = [dict(zip(header, line.split(","))) for line in acc[1:]]
    for r in rows:
        density = float(r["weights %"]) / 100
        if r["structure"] == "structured":
            assert float(r["channels %"]) == pytest.approx(channels_kept(density))  # 100 neurons per layer
        else:
            assert r["channels %"] == ""
    travel = (tmp_path / "r" / "weight_travel.md").read_text()
    assert "selection only" in travel and "kept / selection only" in travel
    md = (tmp_path / "r" / "report.md").read_text()
    assert "no finding by itself" in md
