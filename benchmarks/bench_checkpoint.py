"""What training checkpoints cost, and what they save on preemptible nodes.

Measured side by side in one run on the CPU, for a small net (MLP 40-256-256-10 on MNIST-1D,
generated locally) and a CIFAR-size net (VGG-16 with BN on random 3x32x32 data, 15M weights):

- training time without checkpoints vs with a checkpoint after every epoch (the worst case),
  interleaved repeats, best of each, in CPU seconds of this process (other jobs sharing the
  cores inflate wall time, not CPU time): the direct overhead at that period;
- the cost of one checkpoint (capture weights + optimizer + RNG state, serialise, write it
  atomically into a local store with ``Store.put_bytes``) and of reading one back for a resume,
  in wall seconds (I/O included; on a shared machine an overestimate);
- the cost of the per-batch "is a checkpoint due" poll;
- from those: the overhead at the default period (one checkpoint per
  ``DEFAULT_EVERY_MINUTES`` of training; target <= 2%), the work lost per kill with and without
  checkpoints, and the GPU-hours a campaign spends at a stated preemption rate.

    .venv/bin/python benchmarks/bench_checkpoint.py [--repeats 2] [--campaign-gpu-hours 370]
        [--training-minutes 53] [--mtbf-hours 4]

The campaign defaults are the paper-scale campaign of the README (campaigns/rethinking_lr_cifar10.yaml:
about 370 GPU-hours of 160-epoch trainings of about 53 minutes each, an assumed 20 GPU-seconds per
epoch) and one preemption per node every 4 hours ("a node vanishes every few hours").
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch

from orchestrator.store import Store
from trainers.checkpoint import DEFAULT_EVERY_MINUTES, Checkpointer, TrainingCheckpoint
from trainers.config import DataConfig, ModelConfig, TrainConfig
from trainers.datasets import DataSplits, Split, load_data
from trainers.models import build_model
from trainers.training import train

CPU = torch.device("cpu")


def cifar_size_data(n_train: int = 512, n_test: int = 256) -> DataSplits:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_test, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    empty = Split(x[:0], y[:0])
    return DataSplits(Split(x[:n_train], y[:n_train]), empty, Split(x[n_train:], y[n_train:]), 10, (3, 32, 32))


def measure(name: str, data: DataSplits, model_cfg: ModelConfig, cfg: TrainConfig, repeats: int, store: Store) -> dict:
    path = f"bench/{name}.ckpt"
    plain, with_ck, per_ckpt = [], [], []
    blob = b""
    warm = TrainConfig(lr=cfg.lr, epochs=1, batch_size=cfg.batch_size)  # first-call costs (allocator, kernels) untimed
    train(build_model(model_cfg, data.input_shape, data.num_classes, 0), data, warm, device=CPU, seed=0)
    for _ in range(repeats):  # interleaved: both variants see the same machine load
        t = time.process_time()
        train(build_model(model_cfg, data.input_shape, data.num_classes, 0), data, cfg, device=CPU, seed=0)
        plain.append(time.process_time() - t)

        def save(ck: TrainingCheckpoint) -> None:
            store.put_bytes(path, ck.to_bytes())

        ckr = Checkpointer(save, every_epochs=1, every_minutes=None)
        t = time.process_time()
        train(build_model(model_cfg, data.input_shape, data.num_classes, 0), data, cfg, device=CPU, seed=0,
              checkpointer=ckr)
        with_ck.append(time.process_time() - t)
        per_ckpt.append(ckr.seconds / ckr.written)
        blob = store.get_bytes(path)
    # resume cost: read + deserialise + load into a fresh model and optimizer
    reads = []
    for _ in range(3):
        t = time.perf_counter()
        ck = TrainingCheckpoint.from_bytes(store.get_bytes(path))
        model = build_model(model_cfg, data.input_shape, data.num_classes, 1)
        model.load_state_dict(ck.model)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt.load_state_dict(ck.optimizer)
        reads.append(time.perf_counter() - t)
    # the per-batch poll
    poll = Checkpointer(lambda ck: None)
    poll.start(0)
    n = 100_000
    t = time.perf_counter()
    for _ in range(n):
        poll.due_in_epoch()
    poll_s = (time.perf_counter() - t) / n
    epochs = cfg.epochs
    batches = epochs * math.ceil(len(data.train) / cfg.batch_size)
    best_plain = min(plain)
    return dict(name=name, params=sum(p.numel() for p in build_model(model_cfg, data.input_shape,
                                                                      data.num_classes, 0).parameters()),
                plain=best_plain, with_ck=min(with_ck), epochs=epochs, ckpt=min(per_ckpt), resume=min(reads),
                size=len(blob), poll_fraction=poll_s * batches / best_plain)


def expected_time(segment: float, rate: float, restart: float) -> float:
    """Expected wall time to finish ``segment`` hours of work that a kill (Poisson, ``rate`` per
    hour) sends back to its start, each restart costing ``restart`` hours: (1/rate + restart)(e^(rate*segment) - 1)."""
    return (1.0 / rate + restart) * math.expm1(rate * segment)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--nets", default="small,cifar", help="small (MLP on MNIST-1D) and/or cifar (VGG-16 on 32x32)")
    p.add_argument("--campaign-gpu-hours", type=float, default=370.0)
    p.add_argument("--training-minutes", type=float, default=53.0)
    p.add_argument("--mtbf-hours", type=float, default=4.0, help="mean hours between preemptions of a node")
    a = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp)
        nets = a.nets.split(",")
        results = []
        if "small" in nets:
            results.append(measure("mlp_mnist1d", load_data(DataConfig("mnist1d", root=tmp), 0, CPU),
                                   ModelConfig("mlp", {"widths": [256, 256]}),
                                   TrainConfig(lr=0.05, epochs=6, batch_size=64), a.repeats, store))
        if "cifar" in nets:
            results.append(measure("vgg16_32x32", cifar_size_data(), ModelConfig("vgg16"),
                                   TrainConfig(lr=0.05, epochs=2, batch_size=64), a.repeats, store))

    period = 60.0 * DEFAULT_EVERY_MINUTES
    print(f"torch threads {torch.get_num_threads()}, default period {DEFAULT_EVERY_MINUTES:g} min\n")
    print("| net | weights | checkpoint size | training CPU s/epoch | every epoch: with / without (CPU) | one checkpoint | "
          "resume read | poll per batch | overhead at default period |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        default = r["ckpt"] / period + r["poll_fraction"]
        print(f"| {r['name']} | {r['params'] / 1e6:.2f}M | {r['size'] / 1e6:.1f} MB | {r['plain'] / r['epochs']:.2f} | "
              f"{r['with_ck'] / r['plain']:.3f} | {r['ckpt'] * 1e3:.0f} ms | {r['resume'] * 1e3:.0f} ms | "
              f"{100 * r['poll_fraction']:.3f}% | {100 * default:.3f}% |")

    big = results[-1]  # the campaign estimate uses the largest net measured (VGG-16 unless --nets small)
    rate = 1.0 / a.mtbf_hours
    length = a.training_minutes / 60.0
    c, restart = big["ckpt"] / 3600.0, big["resume"] / 3600.0  # VGG-16's measured costs, in hours
    t_period = period / 3600.0
    print(f"\nwork lost per kill (a kill at a uniform time; {a.training_minutes:g}-minute trainings, "
          f"{big['name']}'s costs):")
    print(f"  without checkpoints: {60 * length / 2:.1f} min on average (up to {a.training_minutes:g})")
    print(f"  with checkpoints every {DEFAULT_EVERY_MINUTES:g} min: {60 * (t_period / 2 + restart):.2f} min on average "
          f"(half a period + {big['resume']:.2f} s to read the checkpoint back)")
    without = a.campaign_gpu_hours * expected_time(length, rate, 0.0) / length
    segments = length / t_period
    with_ck = a.campaign_gpu_hours / length * segments * expected_time(t_period + c, rate, restart)
    print(f"\ncampaign of {a.campaign_gpu_hours:g} GPU-hours, one preemption per node every {a.mtbf_hours:g} h:")
    print(f"  without checkpoints: {without:.0f} GPU-hours ({100 * (without / a.campaign_gpu_hours - 1):.1f}% redone)")
    print(f"  with checkpoints:    {with_ck:.0f} GPU-hours ({100 * (with_ck / a.campaign_gpu_hours - 1):.1f}% redone "
          f"or spent checkpointing)")
    print(f"  saved: {without - with_ck:.0f} GPU-hours")


if __name__ == "__main__":
    main()
