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


def _fake_dataset_roots(tmp_path: Path) -> dict[str, str]:
    """Roots holding (empty) files under the names torchvision expects: enough for validation,
    which checks presence only; loading would verify their content."""
    from trainers.datasets import missing_files

    env = {}
    for name, var in (("mnist", "MNIST_ROOT"), ("cifar10", "CIFAR10_ROOT")):
        root = tmp_path / name
        folder, files = missing_files(name, str(root))
        folder.mkdir(parents=True)
        for f in files:
            (folder / f).touch()
        env[var] = str(root)
    return env


def test_example_campaigns_validate(tmp_path, monkeypatch):
    for var, value in _fake_dataset_roots(tmp_path).items():
        monkeypatch.setenv(var, value)
    root = Path(__file__).resolve().parents[1] / "campaigns"
    paths = sorted(root.glob("*.yaml"))
    assert {"quick.yaml", "rethinking_lr_cifar10.yaml", "lth_lenet.yaml", "rewinding.yaml"} <= {p.name for p in paths}
    for path in paths:
        campaign = load_campaign(path)
        assert campaign.cells, path


def test_paper_scale_campaign_plans_the_rethinking_grid(tmp_path, monkeypatch):
    for var, value in _fake_dataset_roots(tmp_path).items():
        monkeypatch.setenv(var, value)
    from orchestrator.plan import make_plan

    c = load_campaign(Path(__file__).resolve().parents[1] / "campaigns" / "rethinking_lr_cifar10.yaml")
    axes = {k: sorted({str(cell.column(k)) for cell in c.cells}) for k in ("arch", "lr", "structure", "reset", "seed")}
    assert axes["arch"] == ["resnet56", "vgg16"] and axes["lr"] == ["0.01", "0.1"]
    assert axes["structure"] == ["structured", "unstructured"] and axes["reset"] == ["reinit", "rewind"]
    assert len(axes["seed"]) == 5 and len(c.cells) == 2 * 2 * 2 * 2 * 5
    s = make_plan(c).summary()
    # one dense run per (arch, lr, seed); the reinit control retrains on rewind's masks
    assert s.units["dense"] == 2 * 2 * 5
    setup = c.cells[0].setup
    assert (setup.train.epochs, setup.train.batch_size, setup.train.milestones) == (160, 64, (80, 120))


def test_missing_dataset_root_files_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_ROOT", str(tmp_path))
    with pytest.raises(SpecError, match=r"data\.root: .*cifar-10-batches-py lacks \['data_batch_1'"):
        load_campaign(Path(__file__).resolve().parents[1] / "campaigns" / "rethinking_lr_cifar10.yaml")


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


def test_readme_lists_every_declared_option():
    """The README's options table is the one scripts/options_table.py generates from the registries."""
    import sys

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "scripts"))
    from options_table import table

    from trainers.datasets import DATASETS
    from trainers.models import MODELS

    generated = table()
    assert generated in (repo / "README.md").read_text(), "run scripts/options_table.py --write"
    for name in [*DATASETS, *MODELS]:
        assert f"| `{name}` |" in generated


def test_axis_columns_are_the_axis_shorthands():
    """The trials table's axis columns are the grid's shorthands, typed as the settings they name."""

    import pyarrow as pa

    from orchestrator import schema
    from orchestrator.grid import AXIS_SHORTHANDS

    assert list(schema.AXIS_COLUMNS) == list(AXIS_SHORTHANDS)
    # typed as the settings they name (written out by hand here, derived from trainers.config there)
    assert schema.AXIS_COLUMNS == {"dataset": pa.string(), "arch": pa.string(), "lr": pa.float64(),
                                   "schedule": pa.string(), "reset": pa.string(), "structure": pa.string(),
                                   "seed": pa.int64()}
