"""What keeps `lth status` interactive on large stores (benchmarks/bench_cli_scale.py measures it):
the analysis commands are imported lazily, and status reads the small plan index that `lth run`
writes next to plan.json -- with the same output as from the full plan.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from orchestrator import paths
from orchestrator.cli import main, register_campaign
from orchestrator.plan import make_plan
from orchestrator.spec import parse_campaign
from orchestrator.status import read_plan
from orchestrator.store import Store

SPEC = """
name: sc
data: {dataset: digits}
model: {arch: mlp}
train: {lr: 0.1, epochs: 1}
prune: {rate: 0.5, levels: 1}
seed: 0
resets: [rewind, reinit]
grid:
  lr: [0.1, 0.01]
"""


def test_lth_import_leaves_analysis_and_training_stacks_unloaded():
    code = ("import sys, orchestrator.cli; "
            "print(' '.join(m for m in ('analysis.cli', 'duckdb', 'pandas', 'matplotlib', 'scipy', 'torch', 'ray') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == ""
    listed = CliRunner().invoke(main, ["--help"])
    assert listed.exit_code == 0, listed.output
    for name in ("run", "validate", "status", "sql", "report", "compare"):
        assert f"  {name} " in listed.output
    sub = CliRunner().invoke(main, ["sql", "--help"])  # resolving a lazy command loads it
    assert sub.exit_code == 0 and "read-only SQL" in sub.output


def test_status_reads_plan_index_with_same_output(tmp_path):
    store = Store(str(tmp_path / "store"))
    c = parse_campaign(SPEC)
    plan = make_plan(c)
    register_campaign(store, c, plan)
    full = plan.to_json()
    index = store.get_json(paths.plan_index("sc"))
    assert index == {"units": list(full["units"]), "cells": list(full["cells"])}
    assert read_plan(store, "sc") == index
    uids = list(full["units"])
    store.put_json(paths.marker("sc", uids[0]), {"status": "done"})
    store.put_json(paths.marker("sc", uids[1]), {"status": "failed", "reason": "boom"})
    (tmp_path / "store" / "_units" / "campaign=sc" / f"{uids[2]}.json").write_text("{not json")

    def status() -> str:
        result = CliRunner().invoke(main, ["status", "--store", str(tmp_path / "store")])
        assert result.exit_code == 0, result.output
        return result.output

    with_index = status()
    assert f"units done 1, running 0, failed 1, diverged 0, pending {len(uids) - 2}" in with_index
    assert f"bad file _units/campaign=sc/{uids[2]}.json: unreadable unit marker" in with_index
    store.delete(paths.plan_index("sc"))  # a store registered before the index existed
    assert read_plan(store, "sc") == store.get_json(paths.plan_json("sc"))
    assert status() == with_index
    register_campaign(store, c, plan)  # a rerun of `lth run` adds the missing index
    assert store.get_json(paths.plan_index("sc")) == index


def test_report_redraws_only_changed_figures(tmp_path):
    """A second report into the same directory reuses figures whose data did not change."""
    from analysis.report import FIGURE_DIGESTS, build_report
    from analysis.synthetic import write_campaign

    store = Store(str(tmp_path / "store"))
    cells = [dict(dataset="digits", arch=arch, structure="unstructured", schedule="iterative", lr=0.1)
             for arch in ("mlp", "lenet")]

    def acc(cell, reset, level, seed):
        return 0.9 - 0.01 * level + 0.002 * seed + (0.01 if reset == "rewind" else 0.0)

    write_campaign(store, "fig", cells, acc, seeds=(0, 1), levels=2)
    out = tmp_path / "r"
    first = build_report(store, "fig", out)
    figures = sorted(p for p in first.files if p.suffix in (".png", ".pdf"))
    md = (out / "report.md").read_text()
    for p in figures:
        os.utime(p, ns=(1, 1))  # any redraw would give a new mtime
    again = build_report(store, "fig", out)
    assert sorted(p for p in again.files if p.suffix in (".png", ".pdf")) == figures
    assert all(p.stat().st_mtime_ns == 1 for p in figures)
    assert (out / "report.md").read_text() == md
    # new data for one (dataset, arch): only its figure and the aggregate figures are redrawn
    write_campaign(store, "fig", cells, lambda c, r, lv, s: acc(c, r, lv, s) - 0.05 * (c["arch"] == "lenet"),
                   seeds=(0, 1), levels=2)
    build_report(store, "fig", out)
    redrawn = {p.name for p in figures if p.stat().st_mtime_ns != 1}
    assert {"accuracy_digits_lenet.png", "accuracy_digits_lenet.pdf"} <= redrawn
    assert not redrawn & {"accuracy_digits_mlp.png", "accuracy_digits_mlp.pdf"}
    assert set(json.loads((out / FIGURE_DIGESTS).read_text())) >= {"accuracy_digits_mlp", "accuracy_digits_lenet"}


def test_figures_are_drawn_once_per_machine(tmp_path, monkeypatch):
    """A report into a new directory copies figures with the same data from the shared figure
    cache instead of drawing them; an unusable cache never fails a report; the cache is pruned."""
    from analysis import report as report_mod
    from analysis.synthetic import write_campaign

    cache = tmp_path / "figure-cache"
    monkeypatch.setenv("LTH_FIGURE_CACHE", str(cache))
    store = Store(str(tmp_path / "store"))
    cells = [dict(dataset="digits", arch=arch, structure="unstructured", schedule="iterative", lr=0.1)
             for arch in ("mlp", "lenet")]
    write_campaign(store, "fc", cells, lambda c, r, lv, s: 0.9 - 0.01 * lv + 0.002 * s, seeds=(0, 1), levels=2)

    first = report_mod.build_report(store, "fc", tmp_path / "a")
    figures = sorted(p.name for p in first.files if p.suffix in (".png", ".pdf"))
    assert first.figures_drawn == len(figures) // 2 >= 3
    assert len(list(cache.glob("*.png"))) == len(list(cache.glob("*.pdf"))) == first.figures_drawn
    second = report_mod.build_report(store, "fc", tmp_path / "b")
    assert second.figures_drawn == 0
    for name in figures:  # copies, byte for byte (a PDF redrawn would carry a new creation date)
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
    assert not list((tmp_path / "b").glob(".tmp-*"))

    # a cache that cannot be used (a file where the directory should be): figures drawn, no error
    monkeypatch.setenv("LTH_FIGURE_CACHE", str(tmp_path / "store" / "not-a-dir" / "x"))
    (tmp_path / "store" / "not-a-dir").write_text("a file")
    third = report_mod.build_report(store, "fc", tmp_path / "c")
    assert third.figures_drawn == first.figures_drawn
    assert sorted(p.name for p in third.files if p.suffix in (".png", ".pdf")) == figures

    # new accuracies: the two accuracy figures are drawn, the mask figures (same data) copied;
    # pruning keeps the most recently used entries: with room for 2, two of this report's figures
    monkeypatch.setenv("LTH_FIGURE_CACHE", str(cache))
    monkeypatch.setattr(report_mod, "FIGURE_CACHE_ENTRIES", 2)
    write_campaign(store, "fc", cells, lambda c, r, lv, s: 0.8 - 0.01 * lv + 0.002 * s, seeds=(0, 1), levels=2)
    fourth = report_mod.build_report(store, "fc", tmp_path / "d")
    assert fourth.figures_drawn == len(cells)
    assert len(list(cache.glob("*.png"))) == len(list(cache.glob("*.pdf"))) == 2
    used = set(json.loads((tmp_path / "d" / report_mod.FIGURE_DIGESTS).read_text()).values())
    assert {p.stem for p in cache.glob("*.png")} < used
