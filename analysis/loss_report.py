"""The report of a campaign whose task has no accuracy (regression: ``teacher_student`` with
``task: regression``): the rewind-vs-reinit comparison on test loss (lower is better).

Per setting and level: best test loss (minimum over epochs) of each reset, mean ± std over
seeds, and the paired (by seed) difference treatment − control with a 95% t-interval. The
accuracy verdict rule (a margin in accuracy points) has no loss analogue that means the same on
every task, so the verdict here is the sign of the interval: ``treatment lower`` when it lies
below 0, ``control lower`` above 0, else ``unclear``.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from analysis.rethinking_lr import _extra_axes, mean_ci
from analysis.tables import csv_table, markdown_table, mean_std_table


def loss_comparison(runs: pd.DataFrame, keys: list[str], treatment: str, control: str) -> pd.DataFrame:
    """One row per (keys, level > 0): n pairs, mean treatment / control loss, paired difference
    and its CI, and the sign verdict (module docstring)."""
    done = runs[(runs["status"] == "done") & (runs["level"] > 0)]
    rows = []
    for key, g in done.groupby([*keys, "level"], sort=True, dropna=False):
        piv = g.pivot_table(index="seed", columns="reset", values="best_test_loss", aggfunc="first")
        if treatment not in piv or control not in piv:
            continue
        pair = piv[[treatment, control]].dropna()
        diff = (pair[treatment] - pair[control]).to_numpy()
        mean, _, lo, hi = mean_ci(diff)
        verdict = ("unclear" if not (lo == lo) else f"{treatment} lower" if hi < 0 else
                   f"{control} lower" if lo > 0 else "unclear")
        rows.append(dict(zip([*keys, "level"], key if isinstance(key, tuple) else (key,))) | {
            "weights %": round(100 * g["density"].mean(), 2), "pairs": len(pair),
            f"{treatment} loss": pair[treatment].mean(), f"{control} loss": pair[control].mean(),
            "diff": mean, "diff ci low": lo, "diff ci high": hi, "verdict": verdict})
    return pd.DataFrame(rows)


RUN_COLUMNS = ["dataset", "arch", "structure", "schedule", "lr", "extra", "seed", "level", "reset"]


def load_loss_runs(con: duckdb.DuckDBPyConnection, campaign: str) -> pd.DataFrame:
    """One row per run (RUN_COLUMNS; ``extra`` = swept axes beyond the axis columns) with density,
    status and best test loss."""
    df = con.execute(
        "SELECT dataset, arch, structure, schedule, lr, seed, level, reset, axes_json, density, status, "
        "best_test_loss FROM cell_levels WHERE campaign = $c", {"c": campaign}).df()
    df["extra"] = [_extra_axes(a) for a in df["axes_json"]]
    return df.groupby(RUN_COLUMNS, sort=True, dropna=False)[["density", "status", "best_test_loss"]].first().reset_index()


def loss_tables(con: duckdb.DuckDBPyConnection, campaign: str, keys: list[str], treatment: str,
                control: str) -> tuple[pd.DataFrame, str, str]:
    """(comparison frame, its Markdown, a mean ± std Markdown table of every reset's best test loss)."""
    runs = load_loss_runs(con, campaign)
    comp = loss_comparison(runs, keys, treatment, control)
    shown = comp.copy()
    for c in shown.columns:
        if shown[c].dtype == float and c != "weights %":
            shown[c] = shown[c].map(lambda v: f"{v:.4g}")
    summary = (runs[runs["status"] == "done"].groupby([*keys, "level", "reset"], dropna=False)
               .agg(mean=("best_test_loss", "mean"), std=("best_test_loss", "std"),
                    density=("density", "mean")).reset_index())
    summary["weights %"] = (100 * summary.pop("density")).round(2)
    table = mean_std_table(summary, [*keys, "level", "weights %"], "reset", scale=1.0, digits=4,
                           higher_is_better=False)
    return comp, markdown_table(shown), table.markdown()


def write_loss_report(con: duckdb.DuckDBPyConnection, campaign: str, out: Path, keys: list[str], treatment: str,
                      control: str, sections: list[str], files: list[Path]) -> pd.DataFrame:
    """Write ``report.md`` (loss comparison, loss table, then ``sections``), ``comparison.csv`` and
    ``loss.md`` into ``out``; append the paths to ``files``; return the comparison table."""
    comp, comp_md, loss_md = loss_tables(con, campaign, keys, treatment, control)
    for name, text in (("comparison.csv", csv_table(comp)), ("loss.md", loss_md)):
        (out / name).write_text(text)
        files.append(out / name)
    md = [f"# Campaign `{campaign}`: {treatment} vs {control} on test loss", "",
          "This campaign's task has no accuracy (regression), so the comparison is on the best test loss "
          "(minimum over epochs; lower is better). Verdict: the sign of the 95% CI of the paired difference "
          f"{treatment} − {control} (`{treatment} lower` when the CI lies below 0).", "",
          "## Paired comparison", "", comp_md, "", "## Best test loss, mean ± std over seeds (lowest in bold)", "",
          loss_md, "", *sections]
    (out / "report.md").write_text("\n".join(md))
    files.append(out / "report.md")
    return comp
