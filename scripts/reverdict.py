"""Apply the current verdict rule to a committed ``comparison.csv`` (per-level paired differences
written by ``lth report``), without the store: ``python scripts/reverdict.py docs/results/comparison.csv``.

The rule needs only n pairs, mean and SD of the paired differences per level, which the CSV holds;
divergence counts come from the CSV when present (stores without diverged runs have none).
"""

from __future__ import annotations

import sys

import pandas as pd

from analysis import rethinking_lr
from analysis.tables import markdown_table


def main(path: str, metric: str = "best") -> None:
    c = pd.read_csv(path, dtype={"extra": str, "note": str}).fillna({"extra": "", "note": ""})
    c = c[c["metric"] == metric].drop(columns="metric")
    for col in ("diverged_treatment", "diverged_control"):
        if col not in c:
            c[col] = 0
    v = rethinking_lr.verdicts(c)
    table = v[["structure", "schedule", "lr"]].copy()
    table["levels b/e/w/u"] = [f"{r.better}/{r.equivalent}/{r.worse}/{r.undecided}" for r in v.itertuples()]
    table["gain (pts)"] = (100 * v["mean_gain"]).round(2)
    table["sd (pts)"] = (100 * v["sd_diff"]).round(2)
    table["seeds"] = v["pairs"]
    table["MDE80 (pts)"] = (100 * v["mde80"]).round(2)
    table["seeds needed"] = [rethinking_lr.seeds_text(x) for x in v["seeds_needed"]]
    table["verdict"] = v["verdict"]
    print(markdown_table(table))
    for r in v.itertuples():
        print(f"- {r.structure}, {r.schedule}, lr {r.lr:g}: {r.verdict} — {r.reason}")


if __name__ == "__main__":
    main(*sys.argv[1:])
