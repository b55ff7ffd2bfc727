"""The bad-input corpus: every malformed campaign in ``tests/bad_specs/`` is refused by
``lth validate`` and ``lth run`` before Ray starts, with a message naming the key path and
what was expected.

Each ``<case>.yaml`` has a sibling ``<case>.expected``: one substring per line, every one of
which must appear in the CLI's error output. "Ray never started" is checked three ways:
Ray is not initialised in this process (CliRunner runs the command in-process), the store
directory was never created (so no ``_ray`` dir and no rows), and no traceback leaked.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.spec import parse_campaign

CORPUS = Path(__file__).parent / "bad_specs"
CASES = sorted(p.stem for p in CORPUS.glob("*.yaml"))

GOOD = """
name: good
data: {dataset: digits}
model: {arch: mlp}
train: {lr: 0.1, epochs: 1}
prune: {rate: 0.5, levels: 1}
"""


def expected(case: str) -> list[str]:
    lines = [ln for ln in (CORPUS / f"{case}.expected").read_text().splitlines() if ln.strip()]
    assert lines, f"{case}.expected is empty"
    return lines


def assert_refused(result, case: str, store: Path | None = None) -> None:
    assert result.exit_code not in (0, None), f"{case}: accepted\n{result.output}"
    for text in expected(case):
        assert text in result.output, f"{case}: {text!r} not in\n{result.output}"
    assert "Traceback" not in result.output, result.output
    assert not ray.is_initialized(), f"{case}: Ray was started"
    if store is not None:
        assert not store.exists(), f"{case}: the store was touched: {sorted(store.rglob('*'))}"


def test_corpus_is_complete():
    assert len(CASES) >= 20
    for case in CASES:
        assert (CORPUS / f"{case}.expected").is_file(), f"{case}.yaml has no .expected"
    assert sorted(p.stem for p in CORPUS.glob("*.expected")) == CASES


@pytest.mark.parametrize("case", CASES)
def test_validate_refuses(case):
    result = CliRunner().invoke(main, ["validate", str(CORPUS / f"{case}.yaml")])
    assert_refused(result, case)


@pytest.mark.parametrize("case", CASES)
def test_run_refuses_before_ray_and_store(case, tmp_path):
    store = tmp_path / "store"
    result = CliRunner().invoke(main, ["run", str(CORPUS / f"{case}.yaml"), "--store", str(store)])
    assert_refused(result, case, store)


def test_unwritable_store_is_refused_before_ray(tmp_path):
    spec = tmp_path / "good.yaml"
    spec.write_text(GOOD)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    store = blocker / "store"  # a directory below a regular file cannot be created, even by root
    result = CliRunner().invoke(main, ["run", str(spec), "--store", str(store)])
    assert result.exit_code != 0
    assert f"store: {str(store)!r} is not writable" in result.output, result.output
    assert not ray.is_initialized()
    assert blocker.read_text() == "not a directory"


def test_store_from_env_is_checked_too(tmp_path, monkeypatch):
    spec = tmp_path / "good.yaml"
    spec.write_text(GOOD)
    (tmp_path / "f").write_text("")
    monkeypatch.setenv("LTH_STORE", str(tmp_path / "f" / "store"))
    result = CliRunner().invoke(main, ["run", str(spec)])
    assert result.exit_code != 0 and "is not writable" in result.output, result.output
    assert not ray.is_initialized()


def test_missing_campaign_file_is_named(tmp_path):
    path = tmp_path / "nope.yaml"
    for args in (["validate", str(path)], ["run", str(path), "--store", str(tmp_path / "s")]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code != 0 and f"{path}: campaign file not found" in result.output, result.output
    assert not (tmp_path / "s").exists() and not ray.is_initialized()


def test_fixed_value_and_axis_is_not_ambiguous():
    """A setting both fixed and swept is not refused: the axis wins, by design (a section
    holds the defaults a grid overrides). Two axes for one setting are refused (corpus)."""
    c = parse_campaign(GOOD + "grid:\n  lr: [0.05, 0.01]\n")
    assert [cell.setup.train.lr for cell in c.cells] == [0.05, 0.01]


def test_committed_campaign_ids_unchanged(monkeypatch):
    """Stores written before a change to the spec code resume only if every committed campaign
    keeps its trial ids, unit ids and stored spec (recorded in tests/golden_ids.json)."""
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from golden_ids import GOLDEN_ROOTS, golden_ids

    for var, value in GOLDEN_ROOTS.items():
        monkeypatch.setenv(var, value)
    recorded = json.loads((Path(__file__).parent / "golden_ids.json").read_text())
    now = golden_ids()  # also validates campaigns added since the record (their ids are new)
    assert set(recorded) <= set(now), sorted(set(recorded) - set(now))
    for name, ids in recorded.items():
        assert now[name] == ids, f"{name}: ids changed"


def test_no_data_check_plans_a_campaign_whose_data_is_elsewhere(monkeypatch):
    monkeypatch.delenv("LTH_BAD_SPEC_UNSET_ROOT", raising=False)
    case = str(CORPUS / "unset_env_root.yaml")
    result = CliRunner().invoke(main, ["validate", "--no-data-check", case])
    assert result.exit_code == 0, result.output
    assert "valid (data not checked)" in result.output and "data checks skipped" in result.output
    assert "unset in data.root: LTH_BAD_SPEC_UNSET_ROOT" in result.output and "cells: 1" in result.output
    assert not ray.is_initialized()


def test_max_cells_can_be_raised_on_purpose(tmp_path):
    spec = tmp_path / "grid.yaml"
    spec.write_text(GOOD + "max_cells: 2\nseeds: [0, 1, 2]\n")
    refused = CliRunner().invoke(main, ["validate", str(spec)])
    assert refused.exit_code == 1 and "grid: 3 cells = 3 (seeds), above max_cells = 2" in refused.output
    assert CliRunner().invoke(main, ["validate", "--max-cells", "3", str(spec)]).exit_code == 0
    spec.write_text(GOOD + "max_cells: 3\nseeds: [0, 1, 2]\n")
    assert "cells: 3" in CliRunner().invoke(main, ["validate", str(spec)]).output
