"""The planted mutants of scripts/mutation.py still apply to the current sources (each old text
exactly once in its file, related test files present), so the mutation run cannot rot silently.
The mutation run itself is slow and stays out of the default test run (``make mutation``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _mutation():
    spec = importlib.util.spec_from_file_location("mutation", ROOT / "scripts" / "mutation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutation", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_mutant_applies_to_the_current_sources():
    mutation = _mutation()
    assert mutation.check_applies(ROOT) == []
    assert len(mutation.MUTANTS) >= 25


def test_a_planted_mutant_changes_exactly_its_text(tmp_path):
    mutation = _mutation()
    mu = next(m for m in mutation.MUTANTS if m.name == "dense_key_drops_data")
    (tmp_path / "orchestrator").mkdir()
    src = (ROOT / mu.file).read_text()
    (tmp_path / mu.file).write_text(src.replace(mu.edits[0][0], "", 1))
    problems = mutation.check_applies(tmp_path)
    assert any(p.startswith("dense_key_drops_data: expected the text once") for p in problems)
