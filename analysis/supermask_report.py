"""Report section on edge-popup supermasks (``supermask`` / ``supermask_kaiming`` resets).

From ``cell_levels`` (accuracy per level and reset) and the ``supermasks`` table (each supermask
vs the level's ticket mask, per layer), it answers Ramanujan et al.'s three questions at the
campaign's scale -- accuracy vs k (does it rise, then fall?), width (do wider nets give better
supermasks?), init (does signed constant beat Kaiming normal?) -- and whether supermask and
ticket select the same weights (Jaccard vs the value two random masks of those densities have).
Every sentence is computed from the store; nothing is asserted that the numbers do not show.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from analysis.tables import markdown_table

SUPERMASK_RESETS = ("supermask", "supermask_kaiming")
RESET_ORDER = ("dense", "rewind", "reinit", *SUPERMASK_RESETS)


@dataclass
class Section:
    md: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def setting_of(axes_json: str, drop: tuple[str, ...] = ("reset", "seed")) -> str:
    """The swept axes of a cell other than ``drop``, as 'key=value' text ('' if none)."""
    try:
        axes = json.loads(axes_json) if axes_json else {}
    except json.JSONDecodeError:
        return ""
    return ", ".join(f"{k}={v}" for k, v in sorted(axes.items()) if k not in drop)


def natural_key(text: str) -> tuple:
    """Sort key reading digit runs as numbers ('multiplier=2' before 'multiplier=10')."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", str(text)))


def sort_settings(df: pd.DataFrame, *then: str) -> pd.DataFrame:
    """``df`` sorted by ``setting`` in natural order, then by ``then``."""
    order = sorted(df["setting"].unique(), key=natural_key)
    rank = {s: i for i, s in enumerate(order)}
    return (df.assign(_rank=df["setting"].map(rank)).sort_values(["_rank", *then], kind="stable")
            .drop(columns="_rank").reset_index(drop=True))


def _levels(con: duckdb.DuckDBPyConnection, campaign: str) -> pd.DataFrame:
    # Dense rows are served to every cell of their seed: one row per (unit, level, reset).
    df = con.execute(
        "SELECT any_value(axes_json) AS axes_json, any_value(seed) AS seed, level, reset, "
        "any_value(density) AS density, any_value(best_test_accuracy) AS acc, any_value(best_test_loss) AS loss "
        "FROM cell_levels WHERE campaign = $c AND status = 'done' GROUP BY unit_id, level, reset",
        {"c": campaign}).df()
    df["setting"] = [setting_of(a) for a in df["axes_json"]]
    return df


def _fmt(values: pd.Series) -> str:
    v = values.dropna().to_numpy(dtype=float)
    if not len(v):
        return ""
    return f"{100 * v.mean():.1f} ± {100 * v.std(ddof=1):.1f}" if len(v) > 1 else f"{100 * v.mean():.1f}"


def supermask_section(con: duckdb.DuckDBPyConnection, campaign: str, out: Path) -> Section:
    """Markdown lines and figure files of the supermask section; empty when the campaign has no
    supermask rows."""
    sm = con.execute(
        "SELECT t.axes_json, t.seed, s.level, s.reset, s.layer, s.params, s.kept, s.density, s.jaccard_ticket, "
        "s.jaccard_chance FROM supermasks s JOIN trials t ON t.campaign = s.campaign AND t.trial_id = s.trial_id "
        "WHERE s.campaign = $c", {"c": campaign}).df()
    if sm.empty:
        return Section()
    sm["setting"] = [setting_of(a) for a in sm["axes_json"]]
    lv = _levels(con, campaign)
    if lv["acc"].isna().all():
        return Section(["## Supermasks (edge-popup)", "", "This campaign's task has no accuracy; the supermask "
                        "questions below are asked of accuracy, so only the mask overlap is shown.", ""]
                       + _jaccard_md(sm))
    sec = Section(["## Supermasks (edge-popup)", "",
                   "Weights frozen at the dense run's θ0 (`supermask`: signed constant ±std per layer, the paper's "
                   "best; `supermask_kaiming`: Kaiming normal), scores trained with the straight-through gradient "
                   "(SGD momentum, cosine lr), keeping in every layer exactly as many weights as the level's ticket, "
                   "so every row compares the four resets at one density.", ""])
    # Accuracy table: (setting, level, weights %) x reset
    lv["weights %"] = (100 * lv["density"]).round(2)
    table = (lv.groupby(["setting", "level", "weights %", "reset"])["acc"].apply(_fmt).unstack("reset")
             .reset_index())
    cols = [r for r in RESET_ORDER if r in table.columns]
    table = sort_settings(table[["setting", "level", "weights %", *cols]], "level")
    if not table["setting"].astype(bool).any():
        table = table.drop(columns="setting")
    sec.md += ["### Best test accuracy (%) per level, mean ± std over seeds", "",
               markdown_table(table.fillna("").reset_index(drop=True)), ""]
    sec.md += ["### The paper's three findings, at this scale", ""] + _findings(lv) + [""]
    sec.md += _jaccard_md(sm)
    sec.files += _jaccard_figure(sm, out / "supermask_jaccard")
    sec.md += ["![Jaccard overlap of supermask and ticket](supermask_jaccard.png)", ""]
    sec.files += _accuracy_figure(lv, out / "supermask_accuracy")
    sec.md += ["![Accuracy vs weights remaining, tickets, re-init and supermasks](supermask_accuracy.png)", ""]
    return sec


def _findings(lv: pd.DataFrame) -> list[str]:
    lines = []
    sm = lv[lv["reset"].isin(SUPERMASK_RESETS)]
    mean = sm.groupby(["setting", "reset", "density"])["acc"].mean().reset_index()
    for (setting, reset), g in mean.groupby(["setting", "reset"]):
        g = g.sort_values("density", ascending=False)
        peak = g.loc[g["acc"].idxmax()]
        where = ("at the densest level measured" if peak["density"] == g["density"].max() else
                 "at the sparsest level measured" if peak["density"] == g["density"].min() else "in between")
        shape = ("rises then falls" if where == "in between" else
                 "only falls as weights are removed" if where.startswith("at the densest") else "only rises")
        lines.append(f"- Accuracy vs k, `{reset}`{' (' + setting + ')' if setting else ''}: peak "
                     f"{100 * peak['acc']:.1f}% at {100 * peak['density']:.1f}% of the weights ({where}; over "
                     f"{100 * g['density'].max():.1f}% → {100 * g['density'].min():.1f}% it {shape}).")
    settings = sorted(sm["setting"].unique(), key=natural_key)
    if len(settings) > 1:
        piv = sm.pivot_table(index=["reset", "level", "seed"], columns="setting", values="acc")
        for a, b in zip(settings[:-1], settings[1:]):
            d = (piv[b] - piv[a]).dropna()
            lines.append(f"- Setting `{b}` − `{a}` (paired by reset, level, seed): {100 * d.mean():+.2f} points, "
                         f"positive in {int((d > 0).sum())} of {len(d)}.")
    if set(SUPERMASK_RESETS) <= set(sm["reset"]):
        piv = sm.pivot_table(index=["setting", "level", "seed"], columns="reset", values="acc")
        d = (piv["supermask"] - piv["supermask_kaiming"]).dropna()
        lines.append(f"- Signed constant − Kaiming normal (paired by setting, level, seed): {100 * d.mean():+.2f} "
                     f"points, positive in {int((d > 0).sum())} of {len(d)}.")
    piv = lv.pivot_table(index=["setting", "level", "seed"], columns="reset", values="acc")
    for other in ("rewind", "reinit"):
        if "supermask" in piv and other in piv:
            d = (piv["supermask"] - piv[other]).dropna()
            lines.append(f"- `supermask` − `{other}`: {100 * d.mean():+.2f} points, positive in "
                         f"{int((d > 0).sum())} of {len(d)} (setting, level, seed).")
    return lines


def _jaccard_md(sm: pd.DataFrame) -> list[str]:
    g = (sm.groupby(["setting", "reset", "level", "layer"])
         .agg(density=("density", "mean"), J=("jaccard_ticket", "mean"), chance=("jaccard_chance", "mean"))
         .reset_index())
    g["cell"] = [f"{j:.3f} ({c:.3f})" for j, c in zip(g["J"], g["chance"])]
    g["weights %"] = g.groupby(["setting", "reset", "level"])["density"].transform("mean").mul(100).round(2)
    table = g.pivot_table(index=["setting", "reset", "level"], columns="layer", values="cell", aggfunc="first")
    table = table.reset_index()
    if not table["setting"].astype(bool).any():
        table = table.drop(columns="setting")
    ratio = (g["J"] / g["chance"]).replace([np.inf], np.nan)
    return ["### Do supermask and ticket keep the same weights?", "",
            "Jaccard |supermask ∩ ticket| / |supermask ∪ ticket| per layer, mean over seeds, with the value two "
            "independent random masks of the same densities have in brackets. The ticket is the level's IMP mask; "
            "the supermask keeps the same count in every layer.", "",
            markdown_table(table.fillna("")), "",
            f"Over all layers and levels the overlap is {ratio.mean():.2f}× chance on average "
            f"(min {ratio.min():.2f}×, max {ratio.max():.2f}×).", ""]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, base: Path) -> list[Path]:
    paths = [base.with_suffix(".png"), base.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=200)
    fig.savefig(paths[1])
    _plt().close(fig)
    return paths


def _log_percent_axis(ax, percents) -> None:
    """Log x axis, decreasing, with plain-number ticks at (a few of) the plotted percents."""
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullLocator

    ticks: list[float] = []
    for p in sorted({float(f"{p:.2g}") for p in percents}, reverse=True):
        if not ticks or ticks[-1] / p >= 1.6:  # at least 1.6x apart, so labels never overlap
            ticks.append(p)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.invert_xaxis()


def _jaccard_figure(sm: pd.DataFrame, base: Path) -> list[Path]:
    plt = _plt()
    groups = sorted(sm.groupby(["setting", "reset"]), key=lambda kv: (natural_key(kv[0][0]), kv[0][1]))
    cols = min(len(groups), 2)
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.4 * rows), squeeze=False, constrained_layout=True)
    for ax in axes.ravel()[len(groups):]:
        ax.set_visible(False)
    for ax, ((setting, reset), g) in zip(axes.ravel(), groups):
        for i, (layer, h) in enumerate(g.groupby("layer", sort=False)):
            h = h.groupby("density", as_index=False)[["jaccard_ticket", "jaccard_chance"]].mean()
            ax.plot(100 * h["density"], h["jaccard_ticket"], "-o", color=f"C{i}", label=layer, ms=3)
            ax.plot(100 * h["density"], h["jaccard_chance"], ":", color=f"C{i}")
        _log_percent_axis(ax, 100 * g["density"])
        ax.set_xlabel("weights remaining in the layer (%)")
        ax.set_ylabel("Jaccard with the ticket")
        ax.set_title(f"{reset} {setting}".strip() + " (dotted: chance)", fontsize=7)
        ax.legend(fontsize=6)
    return _save(fig, base)


def _accuracy_figure(lv: pd.DataFrame, base: Path) -> list[Path]:
    plt = _plt()
    settings = sorted(lv["setting"].unique(), key=natural_key)
    fig, axes = plt.subplots(1, len(settings), figsize=(3.4 * len(settings), 2.6), squeeze=False,
                             constrained_layout=True)
    for ax, setting in zip(axes[0], settings):
        g = lv[(lv["setting"] == setting) & (lv["level"] > 0)]
        for i, reset in enumerate(r for r in RESET_ORDER if r in set(g["reset"])):
            h = g[g["reset"] == reset].groupby("density")["acc"].agg(["mean", "std"]).reset_index()
            ax.errorbar(100 * h["density"], 100 * h["mean"], yerr=100 * h["std"].fillna(0), fmt="-o", ms=3,
                        label=reset, color=f"C{i}", capsize=2)
        dense = lv[(lv["setting"] == setting) & (lv["level"] == 0)]["acc"]
        if len(dense):
            ax.axhline(100 * dense.mean(), color="gray", ls="--", lw=0.8, label="dense")
        _log_percent_axis(ax, 100 * g["density"])
        ax.set_xlabel("weights remaining (%)")
        ax.set_ylabel("best test accuracy (%)")
        ax.set_title(setting or "", fontsize=7)
        ax.legend(fontsize=6)
    return _save(fig, base)
