"""Figures in the LTH paper's style, as PNG (200 dpi) and PDF, sized for a paper column.

Each function takes a tidy frame (from ``rethinking_lr.summarise`` or a SQL query), writes
``<out_base>.png`` and ``<out_base>.pdf`` and returns the two paths.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window (headless nodes, tests)
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

COLUMN_WIDTH = 3.4  # inches: one column of a two-column paper
PNG_DPI = 200
RESET_COLORS = {"rewind": "tab:blue", "reinit": "tab:red", "finetune": "tab:green", "lr_rewind": "tab:purple"}
SCHEDULE_STYLES = {"iterative": "-", "oneshot": "--"}
_RC = {"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "legend.fontsize": 6, "xtick.labelsize": 6,
       "ytick.labelsize": 6, "lines.linewidth": 1.2, "lines.markersize": 3}


def _color(reset: str, i: int) -> str:
    return RESET_COLORS.get(reset, f"C{(i + 4) % 10}")


def _grid(n: int) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    width = COLUMN_WIDTH if cols == 1 else 2 * COLUMN_WIDTH
    fig, axes = plt.subplots(rows, cols, figsize=(width, 2.3 * rows), squeeze=False, constrained_layout=True)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(fig: plt.Figure, out_base: str | Path) -> list[Path]:
    base = Path(out_base)
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".png"), base.with_suffix(".pdf")]
    # Lay the figure out once, then freeze it: every savefig would otherwise re-run constrained
    # layout (two passes measuring every text), which cost as much as drawing itself. The layout is
    # computed at the PNG's dpi; sizes are in points, so the PDF gets the same arrangement.
    fig.set_dpi(PNG_DPI)
    fig.get_layout_engine().execute(fig)
    fig.set_layout_engine("none")
    fig.savefig(paths[0], dpi=PNG_DPI)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def _percent_axis(ax: plt.Axes, densities: list[float]) -> None:
    """Log x axis of percent of weights remaining, decreasing left to right, ticks at the levels."""
    ticks = sorted({round(100 * d, 1) for d in densities}, reverse=True)
    ax.set_xscale("log")
    ax.set_xlim(max(ticks) * 1.15, min(ticks) / 1.15)
    shown = ticks if len(ticks) <= 8 else ticks[:: math.ceil(len(ticks) / 8)]
    ax.xaxis.set_major_locator(FixedLocator(shown))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}" for t in shown])
    ax.set_xlabel("Percent of weights remaining")


def accuracy_vs_density(summary: pd.DataFrame, out_base: str | Path, *, metric_label: str = "best test accuracy (%)",
                        title: str | None = None) -> list[Path]:
    """Accuracy vs percent of weights remaining, one panel per (structure, lr), a line per reset
    (and line style per schedule) with its 95% CI band; level 0 (dense) is the 100% point of every line."""
    with plt.rc_context(_RC):
        panels = sorted(summary[["structure", "lr"]].drop_duplicates().itertuples(index=False, name=None),
                        key=lambda p: (p[0], -p[1]))
        fig, axes = _grid(max(len(panels), 1))
        resets = [r for r in summary["reset"].unique() if r != "dense"]
        for ax, (structure, lr) in zip(axes, panels):
            sub = summary[(summary["structure"] == structure) & (summary["lr"] == lr)]
            for schedule, sched_df in sub.groupby("schedule"):
                dense = sched_df[sched_df["reset"] == "dense"]
                for i, reset in enumerate(resets):
                    line = pd.concat([dense, sched_df[sched_df["reset"] == reset]]).sort_values("density", ascending=False)
                    if line["reset"].eq(reset).sum() == 0:
                        continue
                    x, y = 100 * line["density"], 100 * line["mean"]
                    label = reset if sub["schedule"].nunique() == 1 else f"{reset} ({schedule})"
                    ax.plot(x, y, SCHEDULE_STYLES.get(schedule, ":"), marker="o", color=_color(reset, i), label=label)
                    if line["ci_low"].notna().any():
                        ax.fill_between(x, 100 * line["ci_low"], 100 * line["ci_high"], color=_color(reset, i),
                                        alpha=0.2, linewidth=0)
            _percent_axis(ax, list(sub["density"]))
            ax.set_ylabel(metric_label[0].upper() + metric_label[1:])
            ax.set_title(f"{structure}, lr = {lr:g}", y=1.0)  # y given: no per-draw title placement
            ax.grid(True, alpha=0.3)
            ax.legend(loc="lower left", frameon=False)
        if title:
            fig.suptitle(title)
        return _save(fig, out_base)


def layer_density(masks: pd.DataFrame, out_base: str | Path) -> list[Path]:
    """Per-layer density per pruning level, one panel per (structure, schedule).

    ``masks`` columns: structure, schedule, level, layer, density (already averaged).
    """
    with plt.rc_context(_RC):
        panels = sorted(masks[["structure", "schedule"]].drop_duplicates().itertuples(index=False, name=None))
        fig, axes = _grid(max(len(panels), 1))
        for ax, (structure, schedule) in zip(axes, panels):
            sub = masks[(masks["structure"] == structure) & (masks["schedule"] == schedule)]
            for i, (layer, df) in enumerate(sub.groupby("layer", sort=True)):
                df = df.sort_values("level")
                ax.plot(df["level"], 100 * df["density"], marker="o", color=f"C{i % 10}", label=layer)
            ax.set_ylim(0, 105)
            ax.set_xlabel("Pruning level")
            ax.set_ylabel("Weights remaining in layer (%)")
            ax.set_title(f"{structure}, {schedule}", y=1.0)
            ax.xaxis.set_major_locator(FixedLocator(sorted(sub["level"].unique())))
            ax.grid(True, alpha=0.3)
            ax.legend(loc="lower left", frameon=False, ncol=2 if sub["layer"].nunique() > 4 else 1)
        return _save(fig, out_base)


def weight_travel(masks: pd.DataFrame, out_base: str | Path) -> list[Path]:
    """Mean |θ_final − θ_init| of kept vs pruned weights per level, one panel per structure, a colour per lr,
    and (dotted) the selection-only control ``travel_kept_null`` where present (trainers/stats.py).

    ``masks`` columns: structure, lr, level, travel_kept, travel_pruned[, travel_kept_null] (already averaged).
    """
    with plt.rc_context(_RC):
        structures = sorted(masks["structure"].unique())
        fig, axes = _grid(max(len(structures), 1))
        for ax, structure in zip(axes, structures):
            sub = masks[masks["structure"] == structure]
            for i, (lr, df) in enumerate(sub.groupby("lr", sort=True)):
                df = df.sort_values("level")
                ax.plot(df["level"], df["travel_kept"], "-", marker="o", color=f"C{i}", label=f"kept, lr={lr:g}")
                ax.plot(df["level"], df["travel_pruned"], "--", marker="x", color=f"C{i}", label=f"pruned, lr={lr:g}")
                if "travel_kept_null" in df and df["travel_kept_null"].notna().any():
                    ax.plot(df["level"], df["travel_kept_null"], ":", marker=".", color=f"C{i}",
                            label=f"selection only, lr={lr:g}")
            ax.set_xlabel("Pruning level")
            ax.set_ylabel("Mean |θ_final − θ_init|")
            ax.set_title(f"Weight travel, {structure}", y=1.0)
            ax.xaxis.set_major_locator(FixedLocator(sorted(sub["level"].unique())))
            ax.grid(True, alpha=0.3)
            ax.legend(frameon=False)
        return _save(fig, out_base)
