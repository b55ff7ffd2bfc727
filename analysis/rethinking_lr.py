"""Does the winning ticket beat random re-initialisation, and at which learning rate?

The question of Liu et al. (Rethinking the Value of Network Pruning, ICLR 2019, §6) about
Frankle & Carbin's lottery tickets: with the standard large lr (0.1) the ticket's
initialisation ("rewind" to θ0) brings no gain over a random re-initialisation ("reinit") of
the same mask; with a small lr (0.01) it does; with structured pruning it does at neither.

Terms. A *setting* is one (campaign, dataset, arch, structure, schedule, lr, extra) where
``extra`` holds any other swept axes (JSON, from ``trials.axes_json``). A *run* is one
training of a setting at one pruning level with one reset mode and one seed (a row of
``levels``; shared rows fanned out to several trials are counted once). Runs pair by seed:
all resets of one seed retrain the same masks on the same data order.

Per (setting, level) and accuracy metric — ``best`` (best test accuracy over epochs, the
Rethinking protocol), ``final``, ``val`` (test accuracy at the best-validation epoch) —
``compare`` reports each side's mean, std and 95% t-interval over seeds, and the paired
difference (treatment − control, same seed) with its 95% t-interval and a two-sided paired
t-test p-value. Only runs with status "done" count.

Verdict rule (``verdicts``), per setting, from the paired-difference CI at each level that has
at least two seed pairs ("testable"):
  * the level is *better* if the CI lies above 0 (a significant gain);
  * else *not better* if the CI's upper end is below ``margin`` (a gain of ``margin`` or more
    — default 0.01, one accuracy point — is ruled out);
  * else *unclear* (the CI still allows a gain of ``margin`` or more).
The verdict is "yes" when a strict majority of testable levels is better, "no" when a strict
majority is not better, otherwise "inconclusive"; with no testable level it is "inconclusive"
and ``reason`` says what is missing (a reset mode, or a second seed).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
from scipy.special import stdtr, stdtrit  # = stats.t.ppf / .sf without scipy.stats' ~1 s import

from orchestrator import schema

METRICS = {
    "best": "best_test_accuracy",
    "final": "final_test_accuracy",
    "val": "val_selected_test_accuracy",
}
SETTING_KEYS = ["campaign", "dataset", "arch", "structure", "schedule", "lr", "extra"]
RUN_KEYS = [*SETTING_KEYS, "seed", "level", "reset"]
TREATMENT, CONTROL = "rewind", "reinit"
DEFAULT_MARGIN = 0.01


def _extra_axes(axes_json: str) -> str:
    """Swept axes beyond the fixed axis columns, as canonical JSON ('' if none)."""
    try:
        axes = json.loads(axes_json) if axes_json else {}
    except json.JSONDecodeError:
        return ""
    extra = {k: v for k, v in axes.items() if k not in schema.AXIS_COLUMNS}
    return json.dumps(extra, sort_keys=True) if extra else ""


def load_runs(con: duckdb.DuckDBPyConnection, campaign: str | None = None) -> pd.DataFrame:
    """One row per run (RUN_KEYS) with density, status and the three accuracies, from ``cell_levels``."""
    where = "WHERE campaign = $campaign" if campaign else ""
    params = {"campaign": campaign} if campaign else {}
    acc = ", ".join(f"any_value(c.{col}) AS {col}" for col in METRICS.values())
    keys = ", ".join(f"c.{k}" if k != "extra" else "s.extra" for k in RUN_KEYS)
    measured = (f"any_value(c.density) AS density, any_value(c.status) AS status, "
                f"any_value(c.early_stop_iteration) AS early_stop_iteration, {acc}")
    c_where = "WHERE c.campaign = $campaign" if campaign else ""
    if not _any_extra_axes(con, where, params):
        # The usual store: no swept axis beyond the axis columns, so `extra` is '' everywhere and
        # neither the trials' JSON (parsed in Python, ~0.3 s for 10k trials) nor the join is needed.
        keys = keys.replace("s.extra", "'' AS extra")
        order = ", ".join(f"c.{k}" if k != "extra" else "extra" for k in RUN_KEYS)
        return con.execute(f"SELECT {keys}, {measured} FROM cell_levels c {c_where} "
                           f"GROUP BY ALL ORDER BY {order}", params).df()
    trials = con.execute(f"SELECT campaign, trial_id, axes_json FROM trials {where}", params).df()
    trials["extra"] = [_extra_axes(a) for a in trials["axes_json"]]
    settings = trials[["campaign", "trial_id", "extra"]]
    con.register("_lth_settings", settings)
    try:
        sql = (
            f"SELECT {keys}, {measured} "
            "FROM cell_levels c JOIN _lth_settings s ON s.campaign = c.campaign AND s.trial_id = c.trial_id "
            f"{c_where} GROUP BY {keys} ORDER BY {keys}"
        )
        return con.execute(sql, params).df()
    finally:
        con.unregister("_lth_settings")


def _any_extra_axes(con: duckdb.DuckDBPyConnection, where: str, params: dict) -> bool:
    """Whether some trial's ``axes_json`` may hold an axis beyond the axis columns (or is not a
    JSON object, which ``_extra_axes`` then judges), checked inside DuckDB without parsing in Python."""
    cond = ("axes_json IS NOT NULL AND axes_json <> '' AND CASE WHEN NOT json_valid(axes_json) "
            "OR json_type(axes_json) <> 'OBJECT' THEN true "
            "ELSE len(list_filter(json_keys(axes_json), lambda k: NOT list_contains($_axes, k))) > 0 END")
    where = f"{where} AND ({cond})" if where else f"WHERE {cond}"
    row = con.execute(f"SELECT count(*) FROM (SELECT 1 FROM trials {where} LIMIT 1)",
                      {**params, "_axes": list(schema.AXIS_COLUMNS)}).fetchone()
    return bool(row[0])


def mean_ci(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, std, ci_low, ci_high) with a t-interval; std and CI are NaN for fewer than 2 values."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n == 0:
        return (math.nan,) * 4
    mean = float(values.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(values.std(ddof=1))
    half = float(stdtrit(n - 1, 0.5 + confidence / 2)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def paired_p_value(diffs: np.ndarray) -> float:
    """Two-sided paired t-test p-value of mean(diffs) == 0 (NaN for < 2 pairs)."""
    diffs = np.asarray(diffs, dtype=float)
    n = len(diffs)
    if n < 2:
        return math.nan
    sd = diffs.std(ddof=1)
    if sd == 0:  # identical differences: certain unless they are all zero
        return 1.0 if diffs.mean() == 0 else 0.0
    t = diffs.mean() / (sd / math.sqrt(n))
    return float(2 * stdtr(n - 1, -abs(t)))


def compare(
    runs: pd.DataFrame,
    axis: str = "reset",
    treatment: str = TREATMENT,
    control: str = CONTROL,
    metric: str = "best",
) -> pd.DataFrame:
    """Paired comparison of two values of ``axis`` within every combination of the other keys.

    ``axis`` is any run key (``reset``, ``schedule``, ``lr``, ``structure``, ...); values are
    matched as strings (``lr`` "0.1"). Returns one row per group with ``n_treatment``,
    ``mean_treatment``, ``std_treatment``, ``ci_low_treatment``, ``ci_high_treatment`` (same for
    control), ``n_pairs``, ``diff_mean``, ``diff_std``, ``diff_ci_low``, ``diff_ci_high``,
    ``p_value`` and ``note`` (what is missing, if anything).
    """
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: expected one of {sorted(METRICS)}")
    if axis not in RUN_KEYS or axis == "seed":
        raise ValueError(f"axis {axis!r}: expected one of {[k for k in RUN_KEYS if k != 'seed']}")
    col = METRICS[metric]
    keys = [k for k in RUN_KEYS if k not in (axis, "seed")]
    df = runs[[*keys, "seed", axis, "density", "status", col]].copy()
    df["_side"] = df[axis].astype(str)
    df = df[df["_side"].isin([str(treatment), str(control)])]
    df["_ok"] = (df["status"] == "done") & df[col].notna()
    rows = []
    # One groupby to number the groups, then plain numpy slices per group: iterating pandas
    # groups (a DataFrame each) over the ~600 groups of a 10k-trial campaign was the slow part.
    grouped = df.groupby(keys, dropna=False, sort=True)
    gid = grouped.ngroup().to_numpy()
    order = np.argsort(gid, kind="stable")  # stable: rows keep their order within a group
    bounds = np.searchsorted(gid[order], np.arange(grouped.ngroups + 1))
    group_keys = grouped.size().index
    group_keys = group_keys.tolist() if len(keys) > 1 else [(k,) for k in group_keys.tolist()]
    side_all, ok_all = df["_side"].to_numpy()[order], df["_ok"].to_numpy()[order]
    seeds_all, values_all = df["seed"].to_numpy()[order], df[col].to_numpy(dtype=float)[order]
    density_all = df["density"].to_numpy(dtype=float)[order]
    for g, key in enumerate(group_keys):
        lo_, hi_ = bounds[g], bounds[g + 1]
        side, ok = side_all[lo_:hi_], ok_all[lo_:hi_]
        seeds, values = seeds_all[lo_:hi_], values_all[lo_:hi_]
        by_side = {}
        for name, value in (("treatment", str(treatment)), ("control", str(control))):
            sel = ok & (side == value)
            by_side[name] = dict(zip(seeds[sel].tolist(), values[sel].tolist()))
        row = dict(zip(keys, key))
        row["density"] = float(pd.Series(density_all[lo_:hi_]).mean())  # pandas' NaN-skipping mean, as before
        for name, vals in by_side.items():
            m, s, lo, hi = mean_ci(np.fromiter(vals.values(), float, len(vals)))
            row.update({f"n_{name}": len(vals), f"mean_{name}": m, f"std_{name}": s,
                        f"ci_low_{name}": lo, f"ci_high_{name}": hi})
        t, c = by_side["treatment"], by_side["control"]
        paired = sorted(set(t) & set(c))
        diffs = np.array([t[k] - c[k] for k in paired], dtype=float)
        m, s, lo, hi = mean_ci(diffs)
        row.update(n_pairs=len(paired), diff_mean=m, diff_std=s, diff_ci_low=lo, diff_ci_high=hi,
                   p_value=paired_p_value(diffs))
        notes = []
        if not t:
            notes.append(f"no {axis}={treatment} runs")
        if not c:
            notes.append(f"no {axis}={control} runs")
        if t and c and len(paired) < 2:
            notes.append(f"{len(paired)} seed pair(s): no CI")
        skipped = int((~ok).sum())
        if skipped:
            notes.append(f"{skipped} run(s) not done/missing {metric}")
        row["note"] = "; ".join(notes)
        rows.append(row)
    columns = keys + ["density", "n_treatment", "mean_treatment", "std_treatment", "ci_low_treatment",
                      "ci_high_treatment", "n_control", "mean_control", "std_control", "ci_low_control",
                      "ci_high_control", "n_pairs", "diff_mean", "diff_std", "diff_ci_low", "diff_ci_high",
                      "p_value", "note"]
    return pd.DataFrame(rows, columns=columns)


def level_outcome(row: pd.Series, margin: float) -> str:
    """'better' | 'not better' | 'unclear' | 'untestable' for one compared level (module docstring)."""
    if row["n_pairs"] < 2 or pd.isna(row["diff_ci_low"]):
        return "untestable"
    if row["diff_ci_low"] > 0:
        return "better"
    if row["diff_ci_high"] < margin:
        return "not better"
    return "unclear"


def _level_outcomes(comp: pd.DataFrame, margin: float) -> np.ndarray:
    """``level_outcome`` of every row at once (row-wise ``iterrows`` is slow on thousands of levels)."""
    lo, hi = comp["diff_ci_low"].to_numpy(dtype=float), comp["diff_ci_high"].to_numpy(dtype=float)
    untestable = (comp["n_pairs"].to_numpy() < 2) | np.isnan(lo)
    return np.select([untestable, lo > 0, hi < margin], ["untestable", "better", "not better"], "unclear")


def verdicts(comparison: pd.DataFrame, margin: float = DEFAULT_MARGIN, group_keys: list[str] | None = None) -> pd.DataFrame:
    """Verdict per setting ("yes" / "no" / "inconclusive") from a ``compare`` result (rule: module docstring)."""
    if group_keys is None:
        group_keys = [k for k in comparison.columns if k in SETTING_KEYS]
    rows = []
    comp = comparison.copy()
    comp["_outcome"] = _level_outcomes(comp, margin)
    for key, group in comp.groupby(group_keys, dropna=False, sort=True):
        outcomes = group["_outcome"].value_counts()
        testable = int(len(group) - outcomes.get("untestable", 0))
        better, not_better = int(outcomes.get("better", 0)), int(outcomes.get("not better", 0))
        if testable == 0:
            verdict = "inconclusive"
            notes = sorted({n for n in group["note"] if n})
            reason = "; ".join(notes) or "no level with two seed pairs"
        elif better * 2 > testable:
            verdict, reason = "yes", f"CI of the gain above 0 at {better}/{testable} levels"
        elif not_better * 2 > testable:
            verdict, reason = "no", f"gain ≥ {100 * margin:g} pts ruled out at {not_better}/{testable} levels"
        else:
            verdict = "inconclusive"
            unclear = testable - better - not_better
            parts = [f"CI above 0 at {better}", f"gain ≥ {100 * margin:g} pts ruled out at {not_better}",
                     f"unclear at {unclear}"]
            counts = (better, not_better, unclear)
            reason = "no majority: " + ", ".join(p for p, n in zip(parts, counts) if n) + f" of {testable} levels"
        rows.append({**dict(zip(group_keys, key)), "levels": len(group), "testable": testable,
                     "better": better, "not_better": not_better,
                     "mean_gain": float(group["diff_mean"].mean()), "verdict": verdict, "reason": reason})
    return pd.DataFrame(rows, columns=[*group_keys, "levels", "testable", "better", "not_better", "mean_gain",
                                       "verdict", "reason"])


def summarise(runs: pd.DataFrame, metric: str = "best") -> pd.DataFrame:
    """Mean, std, 95% CI and n over seeds per (setting, level, reset): the data of tables and plots."""
    col = METRICS[metric]
    ok = runs[(runs["status"] == "done") & runs[col].notna()]
    keys = [*SETTING_KEYS, "level", "reset"]
    agg = ok.groupby(keys, dropna=False, sort=True).agg(
        density=("density", "mean"), n=(col, "size"), mean=(col, "mean"), std=(col, "std")).reset_index()
    n = agg["n"].to_numpy()
    tcrit = np.where(n > 1, stdtrit(np.maximum(n - 1, 1), 0.975), np.nan)
    half = tcrit * agg["std"].to_numpy() / np.sqrt(n)
    agg["ci_low"], agg["ci_high"] = agg["mean"] - half, agg["mean"] + half
    return agg[[*keys, "density", "n", "mean", "std", "ci_low", "ci_high"]]


@dataclass
class RethinkingResult:
    """Everything the report shows about rewind vs reinit for one metric."""

    metric: str
    runs: pd.DataFrame
    comparison: pd.DataFrame
    verdicts: pd.DataFrame
    summary: pd.DataFrame
    problems: list[str]  # why a comparison is impossible, in words (empty when all is there)


def analyse(
    con: duckdb.DuckDBPyConnection,
    campaign: str | None = None,
    *,
    metric: str = "best",
    treatment: str = TREATMENT,
    control: str = CONTROL,
    margin: float = DEFAULT_MARGIN,
    runs: pd.DataFrame | None = None,
) -> RethinkingResult:
    """Rewind-vs-reinit comparison, verdicts and per-reset summary of a campaign (or all campaigns)."""
    runs = load_runs(con, campaign) if runs is None else runs
    problems = []
    resets = set(runs["reset"].astype(str).unique()) if len(runs) else set()  # unique first: 10^5 rows
    if runs.empty:
        problems.append("the store has no level rows" + (f" for campaign {campaign!r}" if campaign else ""))
    for name in (treatment, control):
        if len(runs) and name not in resets:
            problems.append(f"no runs with reset {name!r} (resets present: {sorted(resets)})")
    if len(runs) and runs.groupby(SETTING_KEYS, dropna=False)["seed"].nunique().max() < 2:
        problems.append("every setting has a single seed: no confidence intervals")
    if len(runs) and metric == "val" and runs[METRICS["val"]].isna().all():
        problems.append("no validation split: val-selected accuracy is missing")
    comparison = compare(runs[runs["level"] > 0], "reset", treatment, control, metric) if len(runs) else compare(
        runs, "reset", treatment, control, metric)
    return RethinkingResult(metric, runs, comparison, verdicts(comparison, margin), summarise(runs, metric), problems)
