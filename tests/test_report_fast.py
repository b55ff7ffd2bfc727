"""The fast paths of ``lth report``: verdicts before figures, and load_runs without the JSON parse."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner

from analysis import connect, rethinking_lr
from analysis.cli import report as report_command
from analysis.report import build_report
from analysis.synthetic import write_campaign
from orchestrator.store import Store

CELLS = [dict(dataset="digits", arch="mlp", structure=s, schedule="iterative", lr=0.1)
         for s in ("unstructured", "structured")]


def accuracy(cell, reset, level, seed):
    return 0.9 - 0.01 * level + 0.002 * seed + (0.01 if reset == "rewind" else 0.0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store(tmp_path_factory.mktemp("fast") / "store")
    write_campaign(s, "c", CELLS, accuracy, seeds=(0, 1, 2), levels=2)
    return s


def test_verdicts_come_before_the_figures(store, tmp_path):
    seen = {}

    def on_verdicts(report):
        seen["names"] = {p.name for p in report.out_dir.iterdir()}
        seen["files"] = list(report.files)
        seen["verdicts"] = report.verdicts.copy()

    result = build_report(store, "c", tmp_path / "r", on_verdicts=on_verdicts)
    assert {"verdicts.md", "verdicts.csv", "accuracy.csv", "comparison.csv"} <= seen["names"]
    assert not any(n.endswith((".png", ".pdf")) for n in seen["names"]), seen["names"]
    assert "report.md" not in seen["names"]  # written last, once the figures it embeds exist
    pd.testing.assert_frame_equal(seen["verdicts"], result.verdicts)
    final = {p.name for p in result.files}
    assert {"accuracy_digits_mlp.png", "accuracy_digits_mlp.pdf", "report.md"} <= final
    assert len(result.files) > len(seen["files"]) and all(p.exists() for p in result.files)


def test_cli_prints_the_table_then_the_file_line(store, tmp_path):
    out = CliRunner().invoke(report_command, ["c", "--store", store.root, "--out", str(tmp_path / "r")])
    assert out.exit_code == 0, out.output
    table_at, files_at = out.output.index("| dataset |"), out.output.index("report: ")
    assert table_at < files_at


def test_load_runs_fast_path_equals_the_json_path(store, monkeypatch):
    con = connect(store, campaign="c")
    fast = rethinking_lr.load_runs(con, "c")
    monkeypatch.setattr(rethinking_lr, "_any_extra_axes", lambda *a: True)  # force the Python JSON path
    slow = rethinking_lr.load_runs(con, "c")
    assert len(fast) == 2 * 3 * 3 * 2 - 2 * 3  # cells x seeds x levels x resets, level 0 has one "dense" run
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)


@pytest.mark.parametrize("axes_json, extra", [
    ('{"dataset": "d", "width": 4}', True),  # an axis beyond the axis columns
    ("not json", True),  # left to _extra_axes (which treats it as no extra axes)
    ("[1]", True),  # not an object: left to _extra_axes
    ('{"dataset": "d", "seed": 1}', False),
    ("", False),
    (None, False),
])
def test_any_extra_axes(axes_json, extra):
    con = duckdb.connect()
    con.execute("CREATE TABLE trials (campaign VARCHAR, trial_id VARCHAR, axes_json VARCHAR)")
    con.execute("INSERT INTO trials VALUES ('a', 't', ?)", [axes_json])
    assert rethinking_lr._any_extra_axes(con, "", {}) is extra
    assert rethinking_lr._any_extra_axes(con, "WHERE campaign = $campaign", {"campaign": "b"}) is False
