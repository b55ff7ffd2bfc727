"""Report sections on lucky nodes (``nodes`` table, Tian et al. 2019) and BatchNorm bias signs.

``nodes`` holds, per teacher-student run and student hidden node, the best correlation with a
teacher node of the same layer at the start (``init_*``) and end (``final_*``) of the run, the
fraction of the node's fan-in its mask keeps and its outgoing weight norm. Sections:

1. winner-take-all vs over-parameterisation (dense runs): teacher nodes covered after training
   (a student node at correlation >= ``THRESHOLD`` whose best teacher node it is) and student
   nodes per covered teacher node, per student width;
2. do lucky nodes win? the winner of each covered teacher node (its best-correlated student
   node): the percentile of its initial best correlation within its layer (50% = no luck);
3. does structured IMP keep the lucky nodes? initial (theta_0) correlation of the nodes a
   level keeps vs those it pruned, per pruning method (a random structured mask is the control);
4. does re-initialising lose them? kept nodes' initial and final correlations and teacher
   nodes covered, rewind vs reinit.

``bn_section`` draws, per layer, the fraction of negative BatchNorm biases of the trained dense
nets (Luck Matters, Fig. 6) from the ``masks`` table, for campaigns whose nets have BatchNorm.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from analysis.supermask_report import Section, _plt, _save, setting_of, sort_settings
from analysis.tables import markdown_table

THRESHOLD = 0.9


def _cfg(config_json: str, *path: str):
    try:
        d = json.loads(config_json)
        for p in path:
            d = d[p]
        return d
    except (json.JSONDecodeError, KeyError, TypeError):
        return None


def load_nodes(con: duckdb.DuckDBPyConnection, campaign: str) -> pd.DataFrame:
    """One row per (computing unit, level, reset, layer, node): a dense run's rows are served to
    every cell of its seed, so they are taken once. Adds ``setting`` (swept axes other than reset,
    seed and prune.method), ``method`` (prune.method), ``task`` (data.options.task)."""
    df = con.execute(
        "SELECT n.unit_id, n.level, n.reset, n.layer, n.node, any_value(n.init_teacher) AS init_teacher, "
        "any_value(n.init_correlation) AS init_corr, any_value(n.final_teacher) AS final_teacher, "
        "any_value(n.final_correlation) AS final_corr, any_value(n.fan_in_kept) AS fan_in_kept, "
        "any_value(t.seed) AS seed, any_value(t.axes_json) AS axes_json, any_value(t.config_json) AS config_json "
        "FROM nodes n JOIN trials t ON t.campaign = n.campaign AND t.trial_id = n.trial_id "
        "WHERE n.campaign = $c GROUP BY n.unit_id, n.level, n.reset, n.layer, n.node", {"c": campaign}).df()
    if df.empty:
        return df
    df["setting"] = [setting_of(a, ("reset", "seed", "prune.method")) for a in df["axes_json"]]
    df["method"] = [_cfg(c, "prune", "method") for c in df["config_json"]]
    df["task"] = [_cfg(c, "data", "options", "task") or "classification" for c in df["config_json"]]
    df.loc[df["level"] == 0, "method"] = ""  # the dense run is every method's
    return df.drop(columns=["axes_json", "config_json"])


def _coverage(g: pd.DataFrame) -> tuple[int, float]:
    hit = g[g["final_corr"] >= THRESHOLD]
    counts = hit.groupby("final_teacher").size()
    return int(len(counts)), float(counts.mean()) if len(counts) else 0.0


def lucky_section(con: duckdb.DuckDBPyConnection, campaign: str, out: Path) -> Section:
    nodes = load_nodes(con, campaign)
    if nodes.empty:
        return Section()
    tasks = sorted(nodes["task"].unique())
    sec = Section(["## Lucky nodes (teacher–student)", "",
                   f"Task: {', '.join(tasks)} (`data.options.task`; the paper's setting is regression). Correlation: "
                   "Pearson, post-ReLU activations over the test inputs, student layer i vs teacher layer i. "
                   f"A teacher node is covered by a student node whose best teacher node it is at correlation ≥ "
                   f"{THRESHOLD}. Means over seeds.", ""])
    dense = nodes[nodes["level"] == 0]
    rows, win = [], []
    for (setting, layer), g in dense.groupby(["setting", "layer"]):
        per_seed = [(*_coverage(h), (h["final_corr"] >= THRESHOLD).mean(), h["node"].nunique())
                    for _, h in g.groupby("seed")]
        cov, per, frac, width = (np.mean([p[i] for p in per_seed]) for i in range(4))
        rows.append({"setting": setting, "layer": layer, "student nodes": int(width),
                     "teacher nodes covered": round(cov, 2), "students per covered teacher node": round(per, 2),
                     f"student nodes ≥ {THRESHOLD}": f"{100 * frac:.1f}%", "seeds": len(per_seed)})
        for seed, h in g.groupby("seed"):
            pct = h["init_corr"].rank(pct=True)
            hit = h[h["final_corr"] >= THRESHOLD]
            for _, w in hit.loc[hit.groupby("final_teacher")["final_corr"].idxmax()].iterrows():
                win.append({"setting": setting, "layer": layer, "seed": seed, "pct": pct[w.name],
                            "same": w["init_teacher"] == w["final_teacher"]})
    cov = sort_settings(pd.DataFrame(rows), "layer")
    sec.md += ["### Winner-take-all vs over-parameterisation (dense runs)", "", markdown_table(cov), ""]
    if win:
        w = pd.DataFrame(win).groupby(["setting", "layer"]).agg(
            winners=("pct", "size"), pct=("pct", "mean"), top10=("pct", lambda p: (p >= 0.9).mean()),
            same=("same", "mean")).reset_index()
        w = sort_settings(w, "layer")
        w["winners' mean initial percentile"] = (100 * w.pop("pct")).round(1).astype(str) + "%"
        w["winners in the initial top 10%"] = (100 * w.pop("top10")).round(1).astype(str) + "%"
        w["initially closest to the teacher node they won"] = (100 * w.pop("same")).round(1).astype(str) + "%"
        sec.md += ["### Do lucky nodes win? (dense runs)", "",
                   "For every covered teacher node, its winner (the student node best correlated with it after "
                   "training): the percentile of the winner's *initial* best correlation within its layer (50% and "
                   "10% are what luck-free winners would show).", "", markdown_table(w), ""]
    kept_md, gaps = _kept_vs_pruned(nodes, dense)
    sec.md += kept_md
    if gaps is not None and gaps["method"].nunique() > 1:
        piv = gaps.pivot_table(index=["setting", "level", "layer"], columns="method", values="gap")
        imp = [m for m in piv.columns if not str(m).startswith("random")]
        rnd = [m for m in piv.columns if str(m).startswith("random")]
        for m in imp:
            for r in rnd:
                for layer, h in piv.groupby(level="layer"):
                    d = (h[m] - h[r]).dropna()
                    sec.md.append(f"- Layer {layer}: the kept−pruned gap of `{m}` exceeds that of `{r}` at "
                                  f"{int((d > 0).sum())} of {len(d)} (setting, level); mean excess {d.mean():+.3f}.")
        sec.md.append("")
    if gaps is not None:
        sec.files += _gap_figure(gaps, out / "lucky_kept_vs_pruned")
        sec.md += ["![initial correlation of kept minus pruned nodes, IMP vs random](lucky_kept_vs_pruned.png)", ""]
    sec.md += _rewind_vs_reinit(nodes)
    sec.files += _coverage_figure(cov, out / "lucky_coverage")
    sec.md += ["![teacher nodes covered vs student width](lucky_coverage.png)", ""]
    return sec


def _kept_vs_pruned(nodes: pd.DataFrame, dense: pd.DataFrame) -> tuple[list[str], pd.DataFrame | None]:
    pruned_runs = nodes[(nodes["level"] > 0) & (nodes["reset"] == "rewind")]
    if pruned_runs.empty:
        return [], None
    theta0 = dense.set_index(["setting", "seed", "layer", "node"])["init_corr"]
    df = pruned_runs.join(theta0.rename("theta0_corr"), on=["setting", "seed", "layer", "node"])
    df["kept"] = df["fan_in_kept"] > 0
    g = df.groupby(["setting", "method", "level", "layer", "seed", "kept"])["theta0_corr"].mean().unstack("kept")
    g = g.rename(columns={True: "kept", False: "pruned"}).reset_index()
    if "pruned" not in g:
        return [], None
    g["gap"] = g["kept"] - g["pruned"]
    t = g.groupby(["setting", "level", "layer", "method"])[["kept", "pruned", "gap"]].mean().round(3).reset_index()
    table = t.pivot_table(index=["setting", "level", "layer"], columns="method", values=["kept", "pruned", "gap"])
    table.columns = [f"{v} ({m})" for v, m in table.columns]
    table = sort_settings(table.round(3).reset_index(), "level", "layer")
    return ["### Does structured IMP keep the lucky nodes?", "",
            "Mean initial (θ0, dense run) best correlation of the nodes each level keeps vs those pruned, "
            "per pruning method (`random_structured` is the random-mask control of the same density).", "",
            markdown_table(table), ""], t


def _gap_figure(t: pd.DataFrame, base: Path) -> list[Path]:
    plt = _plt()
    groups = list(sort_settings(t, "level").groupby("setting", sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(2.4 * len(groups), 2.3), squeeze=False, constrained_layout=True)
    for ax, (setting, g) in zip(axes[0], groups):
        for (method, layer), h in g.groupby(["method", "layer"]):
            ax.plot(h["level"], h["gap"], "-o" if method != "random_structured" else ":s", ms=3, color=f"C{layer}",
                    label=f"{method}, layer {layer}")
        ax.axhline(0, color="gray", lw=0.6)
        ax.set_xlabel("level")
        ax.set_ylabel("kept − pruned initial corr")
        ax.set_title(setting, fontsize=6)
        ax.legend(fontsize=4)
    return _save(fig, base)


def _rewind_vs_reinit(nodes: pd.DataFrame) -> list[str]:
    runs = nodes[(nodes["level"] > 0) & nodes["reset"].isin(["rewind", "reinit"]) & (nodes["fan_in_kept"] > 0)]
    if runs["reset"].nunique() < 2:
        return []
    rows = []
    for key, g in runs.groupby(["setting", "method", "level", "reset", "layer"]):
        per_seed = [(h["init_corr"].mean(), h["final_corr"].mean(), _coverage(h)[0]) for _, h in g.groupby("seed")]
        rows.append(dict(zip(["setting", "method", "level", "reset", "layer"], key)) | {
            "kept nodes' initial corr": round(np.nanmean([p[0] for p in per_seed]), 3),
            "final corr": round(np.nanmean([p[1] for p in per_seed]), 3),
            "teacher nodes covered": round(np.mean([p[2] for p in per_seed]), 2)})
    t = sort_settings(pd.DataFrame(rows), "method", "level", "layer", "reset")
    piv = t.pivot_table(index=["setting", "method", "level", "layer"], columns="reset",
                        values=["kept nodes' initial corr", "final corr", "teacher nodes covered"])
    summary = []
    for col, what in (("kept nodes' initial corr", "starts better aligned (initial corr)"),
                      ("final corr", "ends better aligned (final corr)"),
                      ("teacher nodes covered", "covers more teacher nodes")):
        d = (piv[col]["rewind"] - piv[col]["reinit"]).dropna()
        summary.append(f"- The rewound ticket {what} than the re-initialised one at {int((d > 0).sum())} of "
                       f"{len(d)} (setting, method, level, layer), as many at {int((d == 0).sum())}; mean "
                       f"difference {d.mean():+.3f}.")
    return ["### Does re-initialising lose the luck? (kept nodes, rewind vs reinit)", "",
            "The start of a rewound ticket is θ0 under the mask; a re-initialised one starts from a fresh draw.", "",
            *summary, "", markdown_table(t), ""]


def _coverage_figure(cov: pd.DataFrame, base: Path) -> list[Path]:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.4, 2.4), constrained_layout=True)
    for layer, g in cov.groupby("layer", sort=True):  # rows arrive in natural setting order
        ax.plot(g["setting"].astype(str), g["teacher nodes covered"], "-o", ms=3, label=f"layer {layer}: covered")
        ax.plot(g["setting"].astype(str), g["students per covered teacher node"], ":s", ms=3,
                label=f"layer {layer}: students per covered")
    ax.set_xlabel("setting")
    ax.tick_params(axis="x", labelsize=5)
    ax.legend(fontsize=5)
    return _save(fig, base)


def bn_section(con: duckdb.DuckDBPyConnection, campaign: str, out: Path) -> Section:
    """Fraction of negative BN biases per layer of the trained dense nets (level-1 mask statistics
    are computed from them; kept channels only, which at level 1 of unstructured pruning is all)."""
    bn = con.execute(
        "SELECT arch, layer, avg(bn_negative_bias_fraction) AS neg, count(*) AS n FROM cell_masks "
        "WHERE campaign = $c AND kind = 'bn' AND level = 1 AND bn_negative_bias_fraction IS NOT NULL "
        "GROUP BY arch, layer", {"c": campaign}).df()
    if bn.empty:
        return Section()
    # Layer names in natural order (blocks.2 before blocks.10): input to output for our models.
    bn["_key"] = [tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)) for name in bn["layer"]]
    bn = bn.sort_values(["arch", "_key"]).drop(columns="_key").reset_index(drop=True)
    plt = _plt()
    archs = sorted(bn["arch"].unique())
    fig, axes = plt.subplots(1, len(archs), figsize=(3.4 * len(archs), 2.4), squeeze=False, constrained_layout=True)
    for ax, arch in zip(axes[0], archs):
        g = bn[bn["arch"] == arch]
        ax.bar(range(len(g)), 100 * g["neg"])
        ax.set_xticks(range(len(g)), g["layer"], rotation=90, fontsize=4)
        ax.axhline(50, color="gray", ls=":", lw=0.8)
        ax.set_xlabel("BatchNorm layer")
        ax.set_ylabel("negative biases (%)")
        ax.set_title(arch, fontsize=7)
    files = _save(fig, out / "bn_bias_sign")
    table = bn.assign(**{"negative biases %": (100 * bn["neg"]).round(1)})[["arch", "layer", "negative biases %"]]
    return Section(["## BatchNorm bias signs (Luck Matters, Fig. 6)", "",
                    "Fraction of negative BN biases per layer of the trained dense nets, mean over their cells.", "",
                    markdown_table(table), "", "![BN bias sign per layer](bn_bias_sign.png)", ""], files)
