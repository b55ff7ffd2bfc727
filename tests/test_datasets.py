"""Datasets: generated / bundled / on-disk formats through the real loaders, splits, batching, augmentation."""

from __future__ import annotations

import hashlib
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from trainers.config import DataConfig
from trainers.datasets import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    DATASETS,
    Split,
    augment_cifar,
    batches,
    load_data,
    make_teacher,
)

# --- mnist1d -------------------------------------------------------------------------------------

def test_mnist1d_is_generated_offline_cached_and_deterministic(data_root, tmp_path, monkeypatch):
    import requests

    def no_network(*a, **k):
        raise AssertionError("mnist1d loader tried to download")

    monkeypatch.setattr(requests, "get", no_network)
    np.random.seed(123)
    random.seed(123)
    np_before, py_before = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    d = load_data(DataConfig("mnist1d", root=data_root), 0, "cpu")
    # Generation reseeds numpy/random internally; the loader must restore the global streams.
    assert np.random.rand() == np_before and random.random() == py_before
    assert d.input_shape == (1, 40) and d.num_classes == 10
    assert (len(d.train), len(d.val), len(d.test)) == (4000, 0, 1000)
    assert list(Path(data_root).glob("mnist1d-*.npz"))
    # A second load reads the cache; a fresh generation elsewhere gives bit-identical arrays.
    small = {"num_samples": 500}
    first = load_data(DataConfig("mnist1d", root=data_root, options=small), 0, "cpu")
    cached = load_data(DataConfig("mnist1d", root=data_root, options=small), 0, "cpu")
    fresh = load_data(DataConfig("mnist1d", root=str(tmp_path), options=small), 0, "cpu")
    assert torch.equal(first.train.x, cached.train.x) and torch.equal(fresh.train.x, cached.train.x)
    assert torch.equal(fresh.test.y, cached.test.y)


def test_mnist1d_options_change_the_data_and_unknown_options_are_named(tmp_path):
    small = load_data(DataConfig("mnist1d", root=str(tmp_path), options={"num_samples": 500}), 0, "cpu")
    assert (len(small.train), len(small.test)) == (400, 100)
    with pytest.raises(ValueError, match="num_sample"):
        load_data(DataConfig("mnist1d", root=str(tmp_path), options={"num_sample": 5}), 0, "cpu")


# --- validation split ----------------------------------------------------------------------------

def test_validation_split_is_seeded_disjoint_and_complete():
    full = load_data(DataConfig("digits"), 0, "cpu")
    a = load_data(DataConfig("digits", val_size=200), 7, "cpu")
    b = load_data(DataConfig("digits", val_size=200), 7, "cpu")
    c = load_data(DataConfig("digits", val_size=200), 8, "cpu")
    assert (len(a.train), len(a.val)) == (len(full.train) - 200, 200)
    assert torch.equal(a.val.x, b.val.x) and not torch.equal(a.val.x, c.val.x)

    def rows(s: Split) -> set:
        return {tuple(r) for r in s.x.flatten(1).tolist()}

    assert rows(a.train) | rows(a.val) == rows(full.train)
    assert not rows(a.train) & rows(a.val) - rows(full.test)  # digits has a few duplicate images
    assert torch.equal(a.test.x, full.test.x)  # the test set never depends on the seed


def test_bad_val_size_and_unknown_dataset_are_named():
    with pytest.raises(ValueError, match="val_size"):
        load_data(DataConfig("digits", val_size=10**6), 0, "cpu")
    with pytest.raises(ValueError, match="DataConfig.dataset.*'nope'"):
        load_data(DataConfig("nope"), 0, "cpu")


def test_digits_test_split_is_fixed_and_stratified():
    d = load_data(DataConfig("digits"), 3, "cpu")
    counts = torch.bincount(d.test.y, minlength=10)
    assert len(d.test) == 360 and counts.min() >= 35 and counts.max() <= 37  # 360 / 10 classes, stratified
    assert d.input_shape == (1, 8, 8) and 0.0 <= d.train.x.min() and d.train.x.max() <= 1.0


# --- teacher-student -----------------------------------------------------------------------------

def test_teacher_rows_are_distinct_unit_norm_grid_directions():
    t = make_teacher(20, (10, 15, 20, 25), 10, seed=0)
    assert [tuple(w.shape) for w in t.weights] == [(10, 20), (15, 10), (20, 15), (25, 20), (10, 25)]
    for w in t.weights:
        assert torch.allclose(w.norm(dim=1), torch.ones(len(w)))
        assert len({tuple(r) for r in w.tolist()}) == len(w)
        # Before normalising, entries were k/10 with integer |k| <= 5: some K in 1..5 scales each
        # row's largest entry back to K and every entry to an integer.
        for row in w:
            scaled = [row / row.abs().max() * k for k in range(1, 6)]
            assert any(torch.allclose(s, s.round(), atol=1e-4) for s in scaled)


def test_teacher_student_labels_are_the_teachers_argmax_and_deterministic():
    opts = {"n_train": 512, "n_test": 128, "standardize": False}
    d = load_data(DataConfig("teacher_student", options=opts), 0, "cpu")
    d2 = load_data(DataConfig("teacher_student", options=opts), 5, "cpu")
    assert torch.equal(d.train.x, d2.train.x) and torch.equal(d.train.y, d2.train.y)
    assert d.input_shape == (20,) and abs(d.train.x.std().item() - 10.0) < 0.5
    t = make_teacher(20, (10, 15, 20, 25), 10, seed=0)
    x = torch.cat([d.train.x, d.test.x])
    out = t(x)
    assert torch.equal(torch.cat([d.train.y, d.test.y]), (out - out.mean(0)).argmax(1))
    std = load_data(DataConfig("teacher_student", options={**opts, "standardize": True}), 0, "cpu")
    assert torch.allclose(std.train.x * 10.0, d.train.x) and torch.equal(std.train.y, d.train.y)
    with pytest.raises(ValueError, match="width"):
        load_data(DataConfig("teacher_student", options={"width": [3]}), 0, "cpu")


# --- MNIST through torchvision, real idx files ---------------------------------------------------

def _write_idx(path: Path, arr: np.ndarray) -> None:
    # idx format: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian dims, then the bytes.
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, arr.ndim))
        f.write(struct.pack(f">{arr.ndim}I", *arr.shape))
        f.write(arr.astype(np.uint8).tobytes())


def test_mnist_reads_raw_idx_files_through_torchvision(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = {"train": rng.integers(0, 256, (12, 28, 28)), "t10k": rng.integers(0, 256, (5, 28, 28))}
    labels = {"train": rng.integers(0, 10, 12), "t10k": rng.integers(0, 10, 5)}
    for part in ("train", "t10k"):
        _write_idx(raw / f"{part}-images-idx3-ubyte", imgs[part])
        _write_idx(raw / f"{part}-labels-idx1-ubyte", labels[part])
    d = load_data(DataConfig("mnist", root=str(tmp_path)), 0, "cpu")
    assert d.input_shape == (1, 28, 28) and (len(d.train), len(d.test)) == (12, 5)
    expect = (torch.tensor(imgs["t10k"], dtype=torch.float32) / 255 - 0.1307) / 0.3081
    assert torch.allclose(d.test.x[:, 0], expect) and d.test.y.tolist() == labels["t10k"].tolist()

    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"MNIST/raw.*t10k-labels-idx1-ubyte"):
        load_data(DataConfig("mnist", root=str(tmp_path)), 0, "cpu")
    with pytest.raises(ValueError, match="DataConfig.root"):
        load_data(DataConfig("mnist"), 0, "cpu")


# --- CIFAR-10 through torchvision, real pickle batches ---------------------------------------------

def _write_cifar(root: Path, per_batch: int) -> tuple[dict, np.ndarray, list]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)  # rows: R plane, G plane, B plane
        labels = rng.integers(0, 10, per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}, f)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    return md5, data, labels  # the test batch's content


def test_cifar10_reads_python_batches_and_torchvision_verifies_md5(tmp_path):
    md5, test_data, test_labels = _write_cifar(tmp_path, per_batch=4)
    # Our fixture files are not the official ones: torchvision's real md5 check rejects them.
    with pytest.raises(ValueError, match="md5"):
        load_data(DataConfig("cifar10", root=str(tmp_path)), 0, "cpu")
    # With the digests of the files we wrote, the same torchvision code path verifies and loads them.
    d = load_data(DataConfig("cifar10", root=str(tmp_path), options={"md5": md5}), 0, "cpu")
    assert d.input_shape == (3, 32, 32) and (len(d.train), len(d.test)) == (20, 4)
    img = torch.tensor(test_data, dtype=torch.float32).reshape(4, 3, 32, 32) / 255
    expect = (img - torch.tensor(CIFAR10_MEAN)[:, None, None]) / torch.tensor(CIFAR10_STD)[:, None, None]
    assert torch.allclose(d.test.x, expect, atol=1e-6) and d.test.y.tolist() == test_labels
    # A corrupted byte fails the verification even with the supplied digests.
    p = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    p.write_bytes(p.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ValueError, match="md5"):
        load_data(DataConfig("cifar10", root=str(tmp_path), options={"md5": md5}), 0, "cpu")


def test_cifar10_missing_root_names_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*data_batch_1"):
        load_data(DataConfig("cifar10", root=str(tmp_path)), 0, "cpu")


# --- batching and augmentation -------------------------------------------------------------------

def test_batches_cover_every_example_once_keep_the_last_partial_batch_and_are_seeded():
    s = Split(torch.arange(10.0)[:, None], torch.arange(10))
    out = list(batches(s, 4, torch.Generator().manual_seed(3)))
    assert [len(y) for _, y in out] == [4, 4, 2]
    assert sorted(torch.cat([y for _, y in out]).tolist()) == list(range(10))
    assert all(torch.equal(x[:, 0].long(), y) for x, y in out)
    again = list(batches(s, 4, torch.Generator().manual_seed(3)))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(out, again))
    other = torch.cat([y for _, y in batches(s, 4, torch.Generator().manual_seed(4))])
    assert not torch.equal(other, torch.cat([y for _, y in out]))


def test_augment_cifar_is_a_padded_crop_or_its_mirror():
    x = torch.randn(16, 3, 8, 8)
    out = augment_cifar(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    flips = 0
    for i in range(16):
        windows = [(padded[i, :, r : r + 8, c : c + 8], f) for r in range(9) for c in range(9) for f in (0, 1)]
        match = [f for w, f in windows if torch.equal(out[i], w.flip(-1) if f else w)]
        assert match, f"example {i} is not a crop of its padded input"
        flips += match[0]
    assert 0 < flips < 16  # both flipped and unflipped examples occur
    assert torch.equal(out, augment_cifar(x, torch.Generator().manual_seed(0)))


def test_registry_lists_every_dataset_of_the_design():
    assert {"mnist1d", "digits", "teacher_student", "mnist", "cifar10"} <= set(DATASETS)


def test_mnist1d_size_defaults_are_the_packages(tmp_path):
    """Validation sizes MNIST-1D from declared defaults (importing the package takes seconds)."""
    from mnist1d.data import get_dataset_args

    from trainers.datasets import DATASETS, MNIST1D_SIZE_DEFAULTS, DatasetFn, Mnist1dOptions

    options = {"num_samples": 205, "train_split": 0.5, "final_seq_length": 30}
    generated: DatasetFn = DATASETS["mnist1d"]
    raw = generated(DataConfig("mnist1d", root=str(tmp_path), options=options))
    assert (raw.y_train.shape[0], tuple(raw.x_train.shape[1:])) == (100, (1, 30))

    args = get_dataset_args(as_dict=True)
    assert {k: args[k] for k in MNIST1D_SIZE_DEFAULTS} == MNIST1D_SIZE_DEFAULTS
    info = DATASETS.info["mnist1d"](Mnist1dOptions())
    assert (info.train_size, info.input_shape) == (4000, (1, 40))
    small = DATASETS.info["mnist1d"](Mnist1dOptions(num_samples=205, train_split=0.5, final_seq_length=30))
    assert (small.train_size, small.input_shape) == (100, (1, 30))
