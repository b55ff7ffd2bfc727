"""Offline datasets as tensors on the training device, seeded batching, tensor augmentation.

A dataset is one function registered with ``@register_dataset("name")`` that returns
``RawData`` (train / test arrays, class count); ``load_data`` turns it into ``DataSplits`` on
the device, carving the validation split from train by a seeded permutation. Nothing ever
downloads: generated sets (mnist1d, teacher_student) are built locally, digits ships with
scikit-learn, and mnist / cifar10 are read by torchvision's classes from ``cfg.root`` with
``download=False``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Le, Lt
from torch import Tensor

from trainers.config import DataConfig, PositiveFloat, PositiveInt, Seed, Widths
from trainers.registry import Registry


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (N, *input_shape) float32 and targets ``y`` on one device: integer labels (N,)
    for classification, float32 (N, outputs) for regression."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class DataSplits:
    train: Split
    val: Split  # may be empty (val_size 0)
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]  # per-example shape, channels first: (1, 40), (3, 32, 32), ...
    task: str = "classification"  # | "regression" (num_classes is then the number of outputs)


@dataclass(frozen=True)
class RawData:
    """What a dataset function returns: CPU tensors, before the validation split."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int  # classes, or outputs of a regression task
    task: str = "classification"  # which loss and metrics apply: TASKS


# classification: cross-entropy loss, accuracy; regression: mean squared error, no accuracy.
TASKS = ("classification", "regression")

@dataclass(frozen=True)
class DataInfo:
    """What a campaign's checks need to know of a dataset without loading it."""

    train_size: int  # training examples before the validation split
    input_shape: tuple[int, ...]  # per example, channels first
    num_classes: int


DatasetFn = Callable[[DataConfig], RawData]
DATASETS: Registry[DatasetFn] = Registry("dataset")
# Decorator: ``@register_dataset("name", options=Options, info=fn)`` makes
# ``DataConfig(dataset="name")`` load it; ``Options`` declares its ``data.options``, ``info``
# (options -> DataInfo) lets ``lth validate`` size budgets and models without loading the data
# (without it, validation loads the dataset once).
register_dataset = DATASETS.register


def dataset_options(cfg: DataConfig):
    """``cfg.options`` as the dataset's declared options dataclass, defaults filled."""
    return DATASETS.parse_options(cfg.dataset, cfg.options)


def load_data(cfg: DataConfig, seed: int, device: torch.device | str) -> DataSplits:
    """Load ``cfg.dataset`` and move it to ``device``.

    The validation split is ``cfg.val_size`` training examples chosen by a permutation seeded
    with ``seed`` (same seed, same split); 0 gives an empty validation split.
    """
    if cfg.dataset not in DATASETS:
        raise ValueError(f"DataConfig.dataset: unknown dataset {cfg.dataset!r}; expected one of {sorted(DATASETS)}")
    raw = DATASETS[cfg.dataset](cfg)
    n = int(raw.y_train.shape[0])
    if not 0 <= cfg.val_size < n:
        raise ValueError(f"DataConfig.val_size: must be in [0, {n}) for {cfg.dataset!r}, got {cfg.val_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[: cfg.val_size], perm[cfg.val_size :]
    if cfg.val_size == 0:
        train_idx = torch.arange(n)  # keep the dataset's own order when nothing is carved out

    y_dtype = torch.long if raw.task == "classification" else torch.float32

    def split(x: Tensor, y: Tensor) -> Split:
        return Split(x.to(device=device, dtype=torch.float32).contiguous(), y.to(device=device, dtype=y_dtype))

    return DataSplits(
        train=split(raw.x_train[train_idx], raw.y_train[train_idx]),
        val=split(raw.x_train[val_idx], raw.y_train[val_idx]),
        test=split(raw.x_test, raw.y_test),
        num_classes=raw.num_classes,
        input_shape=tuple(raw.x_train.shape[1:]),
        task=raw.task,
    )


def batches(split: Split, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(x, y)`` batches of ``split`` in an order drawn from ``generator`` (a CPU generator).

    Every example appears once; the last, partial batch is kept.
    """
    n = len(split)
    perm = torch.randperm(n, generator=generator).to(split.x.device)
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        yield split.x[idx], split.y[idx]


def augment_cifar(x: Tensor, generator: torch.Generator) -> Tensor:
    """Standard CIFAR augmentation on a (N, C, H, W) batch on any device: zero-pad 4, random
    HxW crop, random horizontal flip (p=0.5). Randomness comes from ``generator`` (CPU)."""
    n, _, h, w = x.shape
    pad = 4
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    rows = oy[:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols_fwd = torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols_fwd.flip(0), cols_fwd) + ox[:, None]  # (N, W)
    # Advanced indexing gathers each example's own window in one kernel: (N, H, W, C).
    out = padded.permute(0, 2, 3, 1)[torch.arange(n, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------------------------------
# Datasets


def _cache_dir(cfg: DataConfig) -> Path:
    root = Path(cfg.root) if cfg.root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lth-sweep"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)  # concurrent trials may build the same cache: last rename wins, same bytes


@dataclass(frozen=True)
class Mnist1dOptions:
    """Overrides of the ``mnist1d`` package's generation arguments; None keeps the package's default
    (so the cache key, and the data, of an unset option follow the package)."""

    num_samples: Annotated[int, Ge(20)] | None = None  # package default 5000 (10 classes, both splits)
    train_split: Annotated[float, Gt(0), Lt(1)] | None = None  # 0.8
    template_len: PositiveInt | None = None  # 12
    padding: tuple[Annotated[int, Ge(0)], Annotated[int, Ge(0)]] | None = None  # [36, 60]
    scale_coeff: Annotated[float, Ge(0)] | None = None  # 0.4
    max_translation: Annotated[int, Ge(0)] | None = None  # 48
    corr_noise_scale: Annotated[float, Ge(0)] | None = None  # 0.25
    iid_noise_scale: Annotated[float, Ge(0)] | None = None  # 0.02
    shear_scale: Annotated[float, Ge(0)] | None = None  # 0.75
    shuffle_seq: bool | None = None  # False
    final_seq_length: PositiveInt | None = None  # 40
    seed: Seed | None = None  # 42


def _mnist1d_args(options: dict) -> dict:
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url")
    args.update({k: v for k, v in options.items() if v is not None})
    return args


# The package's defaults of the arguments that size the data (tests/test_datasets.py checks them
# against get_dataset_args): importing mnist1d takes seconds, too slow for `lth validate`.
MNIST1D_SIZE_DEFAULTS = {"num_samples": 5000, "train_split": 0.8, "final_seq_length": 40}


def _mnist1d_info(o: Mnist1dOptions) -> DataInfo:
    args = {k: v if (v := getattr(o, k)) is not None else d for k, d in MNIST1D_SIZE_DEFAULTS.items()}
    n = args["num_samples"] // 10 * 10  # make_dataset draws num_samples // 10 per class
    return DataInfo(int(n * args["train_split"]), (1, args["final_seq_length"]), 10)


@register_dataset("mnist1d", options=Mnist1dOptions, info=_mnist1d_info)
def mnist1d(cfg: DataConfig) -> RawData:
    """MNIST-1D generated by the ``mnist1d`` package (defaults: 4,000 train / 1,000 test of length 40).

    ``cfg.options`` may override the package's generation arguments (``num_samples``, ``seed``, ...).
    We call ``make_dataset`` directly: the package's ``get_dataset`` would try to download a
    pickle. The arrays are cached as ``mnist1d-<hash>.npz`` under ``cfg.root`` (or
    ``~/.cache/lth-sweep``); generation is deterministic given the arguments.
    """
    from mnist1d.data import make_dataset

    dataset_options(cfg)  # refuses undeclared options
    args = _mnist1d_args(cfg.options)
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
    path = _cache_dir(cfg) / f"mnist1d-{key}.npz"
    if not path.exists():
        # make_dataset reseeds the global numpy / random RNGs; restore them so loading data
        # never changes anything else's random stream.
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            from mnist1d.utils import ObjectView

            d = make_dataset(ObjectView(dict(args)))
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        _atomic_save_npz(path, x=d["x"].astype(np.float32), y=d["y"].astype(np.int64),
                         x_test=d["x_test"].astype(np.float32), y_test=d["y_test"].astype(np.int64))
    with np.load(path) as z:
        x, y, xt, yt = (torch.from_numpy(z[k]) for k in ("x", "y", "x_test", "y_test"))
    return RawData(x[:, None, :], y, xt[:, None, :], yt, num_classes=10)


_DIGITS_SIZE = 1797


@dataclass(frozen=True)
class DigitsOptions:
    # stratified over 10 classes: both splits need at least one example per class
    test_size: Annotated[int, Ge(10), Le(_DIGITS_SIZE - 10)] = 360


@register_dataset("digits", options=DigitsOptions,
                  info=lambda o: DataInfo(_DIGITS_SIZE - o.test_size, (1, 8, 8), 10))
def digits(cfg: DataConfig) -> RawData:
    """scikit-learn's bundled 8x8 digits (1,797 images), pixels scaled to [0, 1], shape (1, 8, 8).

    The test split is fixed (stratified, ``options["test_size"]`` examples, default 360,
    split seed 0) so every run sees the same test set.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    test_size = dataset_options(cfg).test_size
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, stratify=y, random_state=0)

    def to_x(a: np.ndarray) -> Tensor:
        return torch.from_numpy((a / 16.0).astype(np.float32)).reshape(-1, 1, 8, 8)

    return RawData(to_x(x_tr), torch.from_numpy(y_tr), to_x(x_te), torch.from_numpy(y_te), num_classes=10)


@dataclass(frozen=True)
class Teacher:
    """A fixed random ReLU teacher: hidden layers ``weights[:-1]``, output layer ``weights[-1]``."""

    weights: list[Tensor]
    biases: list[Tensor]

    def __call__(self, x: Tensor) -> Tensor:
        h = x
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = torch.relu(h @ w.T + b)
        return h @ self.weights[-1].T + self.biases[-1]


def make_teacher(input_dim: int, widths: tuple[int, ...], outputs: int, seed: int) -> Teacher:
    """Tian et al.'s teacher: each weight row has entries drawn from the grid {-0.5, -0.4, ..., 0.5},
    rows within a layer are distinct, and each row is normalised to unit length (so teacher
    nodes are directions a student node can be "lucky" to start close to). Biases are drawn
    from the same grid."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.linspace(-0.5, 0.5, 11, dtype=torch.float64)
    weights, biases = [], []
    fan_in = input_dim
    for width in (*widths, outputs):
        rows: list[Tensor] = []
        while len(rows) < width:
            row = grid[torch.randint(0, 11, (fan_in,), generator=g)]
            if row.abs().sum() > 0 and not any(torch.equal(row, r) for r in rows):
                rows.append(row)
        w = torch.stack(rows)
        weights.append((w / w.norm(dim=1, keepdim=True)).float())
        biases.append(grid[torch.randint(0, 11, (width,), generator=g)].float())
        fan_in = width
    return Teacher(weights, biases)


@dataclass(frozen=True)
class TeacherStudentOptions:
    input_dim: PositiveInt = 20
    input_std: PositiveFloat = 10.0
    widths: Widths = (10, 15, 20, 25)  # teacher hidden widths
    num_classes: Annotated[int, Ge(2)] = 10
    teacher_seed: Seed = 0
    data_seed: Seed = 0
    n_train: PositiveInt = 8192
    n_test: PositiveInt = 2048
    standardize: bool = True
    # regression: MSE on the teacher's outputs (Tian et al.); classification: argmax labels
    task: Literal["classification", "regression"] = "classification"
    normalize_targets: bool = True  # regression: standardise each teacher output (mean 0, std 1)


@dataclass(frozen=True)
class TeacherStudentSetup:
    """The resolved ``teacher_student`` options and their teacher (``input_scale``: the student
    sees x / input_scale)."""

    options: TeacherStudentOptions
    teacher: Teacher
    input_scale: float


def teacher_student_setup(options: dict) -> TeacherStudentSetup:
    """Parse ``teacher_student`` options (see :func:`teacher_student`) and build its teacher; the
    lucky-node measurements (``trainers.lucky``) use this to meet the same teacher again."""
    o = DATASETS.parse_options("teacher_student", options)
    if o.task not in TASKS:  # the loss depends on it: refuse rather than fall back to classification
        raise ValueError(f"DataConfig.options.task: expected one of {TASKS} for teacher_student, got {o.task!r}")
    teacher = make_teacher(o.input_dim, tuple(o.widths), o.num_classes, o.teacher_seed)
    return TeacherStudentSetup(o, teacher, o.input_std if o.standardize else 1.0)


@register_dataset("teacher_student", options=TeacherStudentOptions,
                  info=lambda o: DataInfo(o.n_train, (o.input_dim,), o.num_classes))
def teacher_student(cfg: DataConfig) -> RawData:
    """Tian et al. (2019) teacher-student data.

    Inputs x ~ N(0, input_std^2) in ``input_dim`` dims (defaults 10 and 20); a seeded teacher
    (``widths`` default (10, 15, 20, 25), ``num_classes`` outputs, default 10, ``teacher_seed``
    default 0). Two tasks (option ``task``):

    - ``regression`` (the paper's setting): the targets are the teacher's outputs, fitted with a
      mean squared error. This is the task for the lucky-node analyses: every output value is a
      signal for a student node to align with a teacher node.
    - ``classification`` (default, kept for campaigns that want accuracy): the label is the argmax
      of the teacher's outputs, each output centred by its mean over the generated inputs so
      classes are roughly balanced. The argmax is a much weaker signal than the outputs.

    Inputs are divided by ``input_std`` for the student when ``standardize`` (default True): that
    rescales all first-layer pre-activations equally, so weight directions, and hence luck, are
    unchanged; regression targets are divided by the same factor (the student then fits the
    teacher with biases scaled by 1/input_std, the same ReLU net up to that scale).
    Options ``n_train`` (default 8192) and ``n_test`` (2048); data seed ``data_seed`` (default 0).
    """
    ts = teacher_student_setup(cfg.options)
    o, n_train = ts.options, ts.options.n_train
    g = torch.Generator().manual_seed(o.data_seed)
    x = torch.randn(o.n_train + o.n_test, o.input_dim, generator=g) * o.input_std
    out = ts.teacher(x)
    if o.task == "regression" and o.normalize_targets:
        # Each output standardised over the generated inputs: an affine change of the output layer
        # only, so the hidden layers face the same problem; the raw outputs of a deep teacher vary
        # so little (variance ~0.02 with the defaults) that the MSE barely moves the student.
        y = (out - out.mean(dim=0)) / out.std(dim=0).clamp(min=1e-12)
    elif o.task == "regression":
        y = out / ts.input_scale
    else:
        y = (out - out.mean(dim=0)).argmax(dim=1)
    x = x / ts.input_scale
    return RawData(x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes=o.num_classes, task=o.task)


def _need_root(cfg: DataConfig, name: str) -> Path:
    if not cfg.root:
        raise ValueError(f"DataConfig.root: dataset {name!r} reads local files; set root to the directory holding them")
    return Path(cfg.root)


_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                "batches.meta")


# Official training-set sizes and (input shape, classes), so a campaign's budget and model can be
# checked without reading the files.
OFFICIAL_TRAIN_SIZES = {"mnist": 60000, "cifar10": 50000}
OFFICIAL_SHAPES = {"mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10)}
_REQUIRED_FILES = {"mnist": ("MNIST/raw", _MNIST_FILES), "cifar10": ("cifar-10-batches-py", _CIFAR_FILES)}


def missing_files(name: str, root: str) -> tuple[Path, list[str]]:
    """(folder, files it lacks) for a dataset read from a local root; cheap (no loading)."""
    sub, files = _REQUIRED_FILES[name]
    folder = Path(root) / sub
    return folder, [f for f in files if not (folder / f).is_file()]


@register_dataset("mnist", info=lambda o: DataInfo(OFFICIAL_TRAIN_SIZES["mnist"], *OFFICIAL_SHAPES["mnist"]))
def mnist(cfg: DataConfig) -> RawData:
    """MNIST through ``torchvision.datasets.MNIST(root, download=False)``: needs the four raw idx
    files (uncompressed) in ``<root>/MNIST/raw``. Normalised with mean 0.1307, std 0.3081."""
    from torchvision.datasets import MNIST

    root = _need_root(cfg, "mnist")
    raw, missing = missing_files("mnist", str(root))
    if missing:
        raise FileNotFoundError(f"mnist: {raw} is missing {missing}; expected the raw idx files {list(_MNIST_FILES)} "
                                "(nothing is downloaded)")
    parts = []
    for train in (True, False):
        ds = MNIST(str(root), train=train, download=False)
        x = (ds.data.float() / 255.0 - 0.1307) / 0.3081
        parts += [x[:, None], ds.targets.long()]
    return RawData(*parts, num_classes=10)


CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _cifar10_class(md5: dict | None):
    """torchvision's CIFAR10, or, when ``md5`` (file name -> digest) is given, the same class with
    the expected digests replaced: every file is still md5-verified by torchvision's own
    ``_check_integrity`` / ``_load_meta``, only against the digests the caller vouches for (a
    re-encoded local copy, or test fixtures). This is how torchvision's own CIFAR100 reuses the code."""
    from torchvision.datasets import CIFAR10

    if not md5:
        return CIFAR10
    missing = [f for f in _CIFAR_FILES if f not in md5]
    if missing:
        raise ValueError(f"DataConfig.options.md5: missing digests for {missing}")
    return type("CIFAR10", (CIFAR10,), {
        "train_list": [[f, md5[f]] for f in _CIFAR_FILES[:5]],
        "test_list": [["test_batch", md5["test_batch"]]],
        "meta": {**CIFAR10.meta, "md5": md5["batches.meta"]},
    })


@dataclass(frozen=True)
class Cifar10Options:
    # file name -> md5 digest, for a re-encoded local copy (see _cifar10_class); None: the official ones
    md5: dict[str, str] | None = None


@register_dataset("cifar10", options=Cifar10Options,
                  info=lambda o: DataInfo(OFFICIAL_TRAIN_SIZES["cifar10"], *OFFICIAL_SHAPES["cifar10"]))
def cifar10(cfg: DataConfig) -> RawData:
    """CIFAR-10 through ``torchvision.datasets.CIFAR10(root, download=False)``: needs the python
    batches in ``<root>/cifar-10-batches-py``, which torchvision verifies against the official
    md5 digests (``options["md5"]`` may supply others, see ``_cifar10_class``). Normalised per channel."""
    root = _need_root(cfg, "cifar10")
    folder, missing = missing_files("cifar10", str(root))
    if missing:
        raise FileNotFoundError(f"cifar10: {folder} is missing {missing}; expected the CIFAR-10 python batches "
                                f"{list(_CIFAR_FILES)} (nothing is downloaded)")
    cls = _cifar10_class(dataset_options(cfg).md5)
    mean = torch.tensor(CIFAR10_MEAN)[:, None, None]
    std = torch.tensor(CIFAR10_STD)[:, None, None]
    parts = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train, download=False)
        except RuntimeError as e:
            raise ValueError(f"cifar10: files in {folder} failed torchvision's md5 check ({e}); expected the "
                             "official CIFAR-10 python batches, or digests in DataConfig.options['md5']") from e
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).float() / 255.0
        parts += [(x - mean) / std, torch.tensor(ds.targets, dtype=torch.long)]
    return RawData(*parts, num_classes=10)
