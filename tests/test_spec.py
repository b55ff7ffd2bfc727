"""Campaign spec validation: every refusal names its key path and what was expected."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator.spec import SpecError, check_store_writable, load_campaign, parse_campaign, stable_hash

BASE = """
name: t
data: {dataset: digits}
model: {arch: mlp}
train: {lr: 0.1, epochs: 1, batch_size: 100}
prune: {rate: 0.5, levels: 2}
"""


def errors(extra: str, base: str = BASE) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_campaign(base + textwrap.dedent(extra))
    return info.value.messages


def test_example_campaigns_validate():
    root = Path(__file__).resolve().parents[1] / "campaigns"
    for path in sorted(root.glob("*.yaml")):
        campaign = load_campaign(path)
        assert campaign.cells, path


def test_grid_expands_to_product_with_stable_ids():
    c = parse_campaign(BASE + "seeds: [0, 1]\nresets: [rewind, reinit]\ngrid:\n  lr: [0.1, 0.01]\n  structure: [unstructured, structured]\n")
    assert len(c.cells) == 2 * 2 * 2 * 2
    ids = [cell.trial_id for cell in c.cells]
    assert len(set(ids)) == len(ids)
    again = parse_campaign(BASE + "seeds: [0, 1]\nresets: [rewind, reinit]\ngrid:\n  lr: [0.1, 0.01]\n  structure: [unstructured, structured]\n")
    assert ids == [cell.trial_id for cell in again.cells]
    assert ids[0] == stable_hash(c.cells[0].config)
    # "auto" method resolves by structure
    methods = {(cell.setup.prune.structure, cell.setup.prune.method) for cell in c.cells}
    assert methods == {("unstructured", "magnitude_global"), ("structured", "l1_structured")}


def test_negative_lr_in_grid_names_axis_index():
    msgs = errors("grid:\n  lr: [0.1, -0.1]\n")
    assert any(m.startswith("grid.lr[1]:") and "greater than 0" in m and "-0.1" in m for m in msgs), msgs


@pytest.mark.parametrize(
    "extra, path",
    [
        ("bogus: 1\n", "bogus: unknown key"),
        ("train2: {}\n", "train2: unknown key"),
        ("grid:\n  train.epochs: ['x']\n", "grid.train.epochs[0]:"),
        ("grid:\n  rate: [0.5]\n", "grid.rate: unknown axis"),
        ("grid:\n  prune.rate: [0.5, 1.5]\n", "grid.prune.rate[1]:"),
        ("grid:\n  lr: []\n", "grid.lr: empty axis"),
        ("grid:\n  lr: [0.1]\n  train.lr: [0.2]\n", "grid.train.lr: duplicate axis"),
        ("seeds: [0]\ngrid:\n  seed: [1]\n", "grid.seed: duplicate axis"),
        ("grid:\n  arch: [mlp, nosuchnet]\n", "grid.arch[1]: unknown arch 'nosuchnet'"),
        ("grid:\n  dataset: [imagenet]\n", "grid.dataset[0]: unknown dataset 'imagenet'"),
        ("reset: sideways\n", "reset: reset 'sideways': unknown mode"),
        ("resets: [rewind, rewind@100000]\n", "resets[1]: rewind@100000 rewinds to iteration 100000"),
        ("max_failures: -1\n", "max_failures:"),
        ("resources: {cpus_per_trial: 0}\n", "resources.cpus_per_trial:"),
    ],
)
def test_refusals_name_the_key_path(extra, path):
    msgs = errors(extra)
    assert any(m.startswith(path) or path in m for m in msgs), msgs


def test_wrong_type_and_range_in_sections():
    msgs = errors("", base=BASE.replace("lr: 0.1", "lr: fast").replace("rate: 0.5", "rate: 1.0"))
    assert any(m.startswith("train.lr:") for m in msgs), msgs
    assert any(m.startswith("prune.rate:") and "less than 1" in m for m in msgs), msgs


def test_density_range_and_rate_derivation():
    msgs = errors("", base=BASE.replace("rate: 0.5", "density: 1.5"))
    assert any(m.startswith("prune.density:") for m in msgs), msgs
    c = parse_campaign(BASE.replace("rate: 0.5", "density: 0.25"))
    # two levels reaching density 0.25 prune half of what remains per level
    assert c.cells[0].setup.prune.rate == pytest.approx(1 - 0.25 ** 0.5)


def test_rewind_k_within_budget_accepted():
    # digits: 1,797 images, a fixed 360-image test split -> 1,437 train -> 15 steps per epoch of 100
    c = parse_campaign(BASE + "resets: [rewind@10, reinit]\n")
    assert c.cells[0].setup.prune.mask_driver == "rewind@10"


def test_duplicate_yaml_key_is_refused():
    msgs = errors("grid:\n  lr: [0.1]\ngrid:\n  lr: [0.2]\n")
    assert any("duplicate key 'grid'" in m for m in msgs), msgs


def test_mnist_needs_existing_root(tmp_path):
    msgs = errors("", base=BASE.replace("digits", "mnist"))
    assert any(m.startswith("data.root:") and "needs data.root" in m for m in msgs), msgs
    msgs = errors("", base=BASE.replace("{dataset: digits}", f"{{dataset: mnist, root: {tmp_path}/nope}}"))
    assert any(m.startswith("data.root:") and "does not exist" in m for m in msgs), msgs


def test_unwritable_store(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SpecError) as info:
        check_store_writable(str(blocker / "store"))
    assert info.value.messages[0].startswith("store:")
    check_store_writable(str(tmp_path / "ok"))
    assert (tmp_path / "ok").is_dir()
