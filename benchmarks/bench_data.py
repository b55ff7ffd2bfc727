"""Epoch time of our tensor batching vs torch.utils.data.DataLoader over the same MNIST-1D tensors.

Two measurements per path, each the median over epochs, with the two paths interleaved epoch by
epoch so both see the same machine load: "data only" (fetch every batch of one shuffled epoch)
and "train epoch" (fetch + MLP forward/backward/SGD step, batch 128). The ratio is printed.
Run: ``.venv/bin/python benchmarks/bench_data.py [--epochs N]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from trainers.config import DataConfig, ModelConfig
from trainers.datasets import batches, load_data
from trainers.device import pick_device
from trainers.models import build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def one_epoch(loader, device, step=None) -> float:
    t = time.perf_counter()
    for x, y in loader:
        if step is not None:
            step(x, y)
    _sync(device)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--root", default=None, help="mnist1d cache directory")
    a = p.parse_args()
    device = pick_device()
    data = load_data(DataConfig("mnist1d", root=a.root), 0, device)
    model = build_model(ModelConfig("mlp"), data.input_shape, data.num_classes, 0).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    dataset = TensorDataset(data.train.x, data.train.y)

    def step(x, y) -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    paths = {
        "tensor batching (ours)": lambda e: batches(data.train, a.batch_size, torch.Generator().manual_seed(e)),
        # The usual default: per-example __getitem__ + default_collate, no workers (the tensors are
        # already in memory / on the device; workers cannot share CUDA tensors anyway).
        "DataLoader(TensorDataset)": lambda e: DataLoader(dataset, batch_size=a.batch_size, shuffle=True,
                                                          generator=torch.Generator().manual_seed(e)),
    }
    times = {(name, kind): [] for name in paths for kind in ("data", "train")}
    for e in range(a.epochs + 1):  # epoch 0 is warm-up, not recorded
        for name, make in paths.items():
            for kind, fn in (("data", None), ("train", step)):
                t = one_epoch(make(e), device, fn)
                if e:
                    times[(name, kind)].append(t)

    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    ours, dl = paths
    print(f"MNIST-1D train split: {len(data.train)} examples, batch {a.batch_size}, device {device}, "
          f"torch threads {torch.get_num_threads()}, median of {a.epochs} interleaved epochs")
    print(f"{'epoch (ms)':<14}{ours:>26}{dl:>28}{'DataLoader / ours':>20}")
    for kind in ("data", "train"):
        print(f"{kind + (' only' if kind == 'data' else ' epoch'):<14}{med[(ours, kind)]:>26.2f}"
              f"{med[(dl, kind)]:>28.2f}{med[(dl, kind)] / med[(ours, kind)]:>19.1f}x")


if __name__ == "__main__":
    main()
