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
difference (treatment − control, same seed) with its 95% and 90% t-intervals, a two-sided paired
t-test p-value and the p-values of the three decisions of ``analysis.paired_tests``.

Diverged runs are not dropped (dropping them with their pair would favour the side that
diverges): a diverged run scores the dataset's chance accuracy (1 / classes), so it counts as a
loss for its side, and the diverged runs per side are counted (``diverged_treatment``,
``diverged_control``). Failed or missing runs are left out and said in ``note``.

Verdict rule (``verdicts``), per setting, from its levels with at least two seed pairs ("testable"):
  * each level is *better*, *equivalent*, *worse* or *undecided* (``paired_tests``: CI above 0 and
    gain ≥ margin / TOST at ±margin, i.e. the 90% CI inside (−margin, margin) / CI below 0 and
    gain ≤ −margin), after Holm's correction of each test over the setting's levels;
  * the verdict is "yes" when a strict majority of testable levels is better, "no" when a strict
    majority is equivalent or worse, otherwise "undecided" — the same strength of evidence is asked
    of both answers. Settings are not corrected against each other: read them as separate questions.
Each verdict carries its power: the pooled SD of the paired differences, the minimum detectable
effect at 80% power and the current seeds, and the seeds per level at which a majority of levels
would be decided with 80% power if the true gains were the observed ones ("seeds needed").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
from scipy.special import stdtr, stdtrit  # = stats.t.ppf / .sf without scipy.stats' ~1 s import

from analysis import paired_tests as pt
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
    """One row per run (RUN_KEYS) with density, status and the three accuracies, from ``cell_levels``;
    ``chance_accuracy`` (1 / classes of the run's dataset) is filled where a run diverged."""
    runs = _load_runs(con, campaign)
    runs["chance_accuracy"] = math.nan
    diverged = runs["status"] == "diverged"
    if diverged.any():
        chance = chance_accuracies(con, campaign)
        runs.loc[diverged, "chance_accuracy"] = runs.loc[diverged, "dataset"].map(chance).astype(float)
    return runs


def chance_accuracies(con: duckdb.DuckDBPyConnection, campaign: str | None = None) -> dict[str, float]:
    """{dataset: 1 / its number of classes} from the trials' configs, without loading the data
    (the dataset registry's size info); datasets whose classes are unknown are left out."""
    from trainers.datasets import DATASETS  # torch: imported only when some run diverged

    where = "WHERE campaign = $campaign" if campaign else ""
    rows = con.execute(f"SELECT dataset, any_value(config_json) FROM trials {where} GROUP BY dataset",
                       {"campaign": campaign} if campaign else {}).fetchall()
    out = {}
    for dataset, config_json in rows:
        try:
            data = json.loads(config_json).get("data", {})
            options = DATASETS.parse_options(dataset, data.get("options") or {})
            out[dataset] = 1.0 / DATASETS.info[dataset](options).num_classes
        except (KeyError, ValueError, TypeError, AttributeError, ZeroDivisionError):
            continue
    return out


def _load_runs(con: duckdb.DuckDBPyConnection, campaign: str | None) -> pd.DataFrame:
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
    chance = runs["chance_accuracy"] if "chance_accuracy" in runs else pd.Series(math.nan, index=runs.index)
    df = runs[[*keys, "seed", axis, "density", "status", col]].assign(_chance=chance)
    df["_side"] = df[axis].astype(str)
    df = df[df["_side"].isin([str(treatment), str(control)])]
    df["_div"] = df["status"] == "diverged"
    # A diverged run scores chance accuracy (0 where the classes are unknown): a loss for its side.
    df[col] = np.where(df["_div"], df["_chance"].fillna(0.0), df[col])
    df["_ok"] = ((df["status"] == "done") & df[col].notna()) | df["_div"]
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
    div_all, chance_known = df["_div"].to_numpy()[order], df["_chance"].notna().to_numpy()[order]
    seeds_all, values_all = df["seed"].to_numpy()[order], df[col].to_numpy(dtype=float)[order]
    density_all = df["density"].to_numpy(dtype=float)[order]
    for g, key in enumerate(group_keys):
        lo_, hi_ = bounds[g], bounds[g + 1]
        side, ok = side_all[lo_:hi_], ok_all[lo_:hi_]
        seeds, values, div = seeds_all[lo_:hi_], values_all[lo_:hi_], div_all[lo_:hi_]
        by_side, diverged = {}, {}
        for name, value in (("treatment", str(treatment)), ("control", str(control))):
            sel = ok & (side == value)
            by_side[name] = dict(zip(seeds[sel].tolist(), values[sel].tolist()))
            diverged[name] = int((div & (side == value)).sum())
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
                   p_value=paired_p_value(diffs), diverged_treatment=diverged["treatment"],
                   diverged_control=diverged["control"])
        notes = []
        if not t:
            notes.append(f"no {axis}={treatment} runs")
        if not c:
            notes.append(f"no {axis}={control} runs")
        if t and c and len(paired) < 2:
            notes.append(f"{len(paired)} seed pair(s): no CI")
        skipped = int((~ok).sum())
        if skipped:
            notes.append(f"{skipped} run(s) failed/missing {metric}: left out")
        if div.any():
            unknown = int((div & ~chance_known[lo_:hi_]).sum())
            notes.append(f"{int(div.sum())} diverged run(s) scored at chance accuracy"
                         + (f" ({unknown} at 0: classes unknown)" if unknown else ""))
        row["note"] = "; ".join(notes)
        rows.append(row)
    columns = keys + ["density", "n_treatment", "mean_treatment", "std_treatment", "ci_low_treatment",
                      "ci_high_treatment", "n_control", "mean_control", "std_control", "ci_low_control",
                      "ci_high_control", "n_pairs", "diff_mean", "diff_std", "diff_ci_low", "diff_ci_high",
                      "p_value", "diverged_treatment", "diverged_control", "note"]
    return pd.DataFrame(rows, columns=columns)


DECISION_COLUMNS = ["diff_ci90_low", "diff_ci90_high", "p_better", "p_worse", "p_equivalent", "p_better_holm",
                    "p_worse_holm", "p_equivalent_holm", "outcome", "mde80", "seeds_needed"]


def decide_levels(comparison: pd.DataFrame, margin: float = DEFAULT_MARGIN,
                  group_keys: list[str] | None = None) -> pd.DataFrame:
    """``comparison`` plus, per level, the 90% CI, the three decisions' p-values (raw and Holm-adjusted
    within each group of ``group_keys``, default the setting), the outcome, the minimum detectable
    effect at 80% power and the seed pairs that decide the level with 80% power (module docstring)."""
    if group_keys is None:
        group_keys = [k for k in comparison.columns if k in SETTING_KEYS]
    comp = comparison.drop(columns=[c for c in DECISION_COLUMNS if c in comparison.columns]).copy()
    n, mean, sd = (comp[c].to_numpy(dtype=float) for c in ("n_pairs", "diff_mean", "diff_std"))
    comp["diff_ci90_low"], comp["diff_ci90_high"] = pt.t_interval(n, mean, sd, 1 - 2 * pt.ALPHA)
    raw = pt.level_pvalues(n, mean, sd, margin)
    gid = comp.groupby(group_keys, dropna=False, sort=False).ngroup().to_numpy() if len(comp) else np.array([], int)
    for name, p in raw.items():
        comp[name] = p
        adjusted = np.full_like(p, np.nan)
        for g in np.unique(gid):
            sel = gid == g
            adjusted[sel] = pt.holm(p[sel])
        comp[f"{name}_holm"] = adjusted
    comp["outcome"] = pt.classify(mean, comp["p_better_holm"], comp["p_worse_holm"], comp["p_equivalent_holm"], margin)
    # Power at alpha / (testable levels of the setting): Bonferroni, which Holm's step-down never
    # needs more than, so the seeds asked for are enough after the correction.
    k = pd.Series(n >= 2).groupby(gid).transform("sum").to_numpy(dtype=float) if len(comp) else np.array([])
    alpha = pt.ALPHA / np.maximum(k, 1)
    comp["mde80"] = pt.minimum_detectable_effect(n, sd, alpha=alpha)
    comp["seeds_needed"] = pt.seeds_needed(mean, sd, margin, alpha=alpha)
    return comp


def _majority_seeds(group: pd.DataFrame, margin: float) -> float:
    """Seeds per level at which a strict majority of the testable levels would be decided in one
    direction (each level heading where its observed gain points): ``inf`` if the levels split."""
    testable = group[group["outcome"] != "untestable"]
    need = len(testable) // 2 + 1
    best = math.inf
    for heading in ("better", "equivalent", "worse"):
        seeds = np.sort(testable.loc[pt.direction(testable["diff_mean"], margin)
                                     == heading, "seeds_needed"].to_numpy(dtype=float))
        if len(seeds) >= need:
            best = min(best, float(seeds[need - 1]))
    return best


def seeds_text(seeds: float) -> str:
    return f"more than {pt.MAX_SEEDS}" if math.isinf(seeds) else f"{seeds:.0f}"


def verdicts(comparison: pd.DataFrame, margin: float = DEFAULT_MARGIN, group_keys: list[str] | None = None) -> pd.DataFrame:
    """Verdict per setting ("yes" / "no" / "undecided") from a ``compare`` result (rule: module docstring),
    with the level counts per outcome, diverged runs per side and the power of the verdict."""
    if group_keys is None:
        group_keys = [k for k in comparison.columns if k in SETTING_KEYS]
    comp = decide_levels(comparison, margin, group_keys)
    rows = []
    for key, group in comp.groupby(group_keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        counts = group["outcome"].value_counts()
        better, equivalent, worse, undecided = (int(counts.get(o, 0)) for o in pt.OUTCOMES[:4])
        testable = better + equivalent + worse + undecided
        ok = group[group["outcome"] != "untestable"]
        dof = (ok["n_pairs"] - 1).to_numpy(dtype=float)
        sd = math.sqrt(float((dof * ok["diff_std"].to_numpy(dtype=float) ** 2).sum() / dof.sum())) if testable else math.nan
        n = int(ok["n_pairs"].median()) if testable else 0
        mde = float(pt.minimum_detectable_effect(n, sd, alpha=pt.ALPHA / max(testable, 1))) if testable else math.nan
        seeds = _majority_seeds(group, margin) if testable else math.nan
        parts = [f"{name} at {c}" for name, c in (("better", better), ("equivalent", equivalent), ("worse", worse),
                                                 ("undecided", undecided)) if c]
        counted = ", ".join(parts) + f" of {testable} levels (Holm within the setting)"
        if testable == 0:
            verdict = "undecided"
            notes = sorted({n for n in group["note"] if n})
            reason = "; ".join(notes) or "no level with two seed pairs"
        elif better * 2 > testable:
            verdict, reason = "yes", counted
        elif (equivalent + worse) * 2 > testable:
            verdict, reason = "no", counted
        else:
            verdict = "undecided"
            if math.isinf(seeds):
                reason = f"{counted}; the levels point different ways (or sit on the margin): more seeds alone would not give a majority"
            else:
                reason = f"{counted}; ≈ {seeds_text(seeds)} seeds would decide a majority of levels (80% power)"
        rows.append({**dict(zip(group_keys, key)), "levels": len(group), "testable": testable,
                     "better": better, "equivalent": equivalent, "worse": worse, "undecided": undecided,
                     "diverged_treatment": int(group["diverged_treatment"].sum()),
                     "diverged_control": int(group["diverged_control"].sum()),
                     "mean_gain": float(group["diff_mean"].mean()), "sd_diff": sd, "pairs": n, "mde80": mde,
                     "seeds_needed": seeds, "verdict": verdict, "reason": reason})
    return pd.DataFrame(rows, columns=[*group_keys, "levels", "testable", "better", "equivalent", "worse", "undecided",
                                       "diverged_treatment", "diverged_control", "mean_gain", "sd_diff", "pairs",
                                       "mde80", "seeds_needed", "verdict", "reason"])


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
    return RethinkingResult(metric, runs, decide_levels(comparison, margin), verdicts(comparison, margin),
                            summarise(runs, metric), problems)
