"""Cost of keeping pruned weights at zero, and the speed of a structurally exported network.

Prints, measured side by side in one run on the CPU (single thread, interleaved repeats,
median of per-repeat times):

- masked training step / dense step, for our enforcement (trainers.training.MaskEnforcer:
  multiply weights and momentum by the mask after the optimizer step) and for
  torch.nn.utils.prune (weight recomputed as weight_orig * mask by a forward pre-hook);
  target for ours <= 1.10;
- forward time of the network exported by trainers.export.export_structured at 50% channels
  / forward time of the dense network; target <= 0.6.

    .venv/bin/python benchmarks/bench_masked_step.py [--repeats 7] [--steps 10]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.utils import prune as tprune

from trainers.config import ModelConfig, PruneConfig
from trainers.export import export_structured
from trainers.masks import apply_mask
from trainers.models import build_model
from trainers.pruning import compute_mask
from trainers.training import MaskEnforcer

CASES = {  # name -> (model config, input shape, batch size)
    "mlp": (ModelConfig("mlp"), (1, 40), 128),
    "cnn1d": (ModelConfig("cnn1d"), (1, 40), 128),
    "resnet20": (ModelConfig("resnet20"), (3, 32, 32), 32),
}
EXPORT_CASES = {
    "vgg11": (ModelConfig("vgg11"), (3, 32, 32), 32),
    "cnn1d": (ModelConfig("cnn1d"), (1, 40), 512),
    "resnet20 (first conv of each block)": (ModelConfig("resnet20"), (3, 32, 32), 32),
}


def _opt(model):
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)


def _runner(model, x, y, enforcer=None):
    opt = _opt(model)

    def step():
        out = model(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if enforcer is not None:
            enforcer.apply(opt)

    return step


def _time(fn, steps):
    fn()  # warm-up (optimizer state, allocator)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def bench_steps(repeats: int, steps: int) -> None:
    print(f"{'model':<10} {'ours masked/dense':>18} {'torch.prune/dense':>18}   (80% of weights pruned)")
    for name, (cfg, shape, bs) in CASES.items():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(bs, *shape, generator=g)
        y = torch.randint(0, 10, (bs,), generator=g)
        dense = build_model(cfg, shape, 10, seed=0)
        mask = compute_mask(dense, dense.state_dict(), PruneConfig(rate=0.8), 1, None, 0)
        ours = copy.deepcopy(dense)
        apply_mask(ours, mask)
        theirs = copy.deepcopy(dense)
        mods = [(theirs.get_submodule(n.rpartition(".")[0]), "weight") for n in theirs.prunable()]
        tprune.global_unstructured(mods, pruning_method=tprune.L1Unstructured, amount=0.8)
        runs = {
            "dense": _runner(dense, x, y),
            "ours": _runner(ours, x, y, MaskEnforcer(ours, mask, torch.device("cpu"))),
            "torch": _runner(theirs, x, y),
        }
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(repeats):  # interleaved so drift in machine load hits all three alike
            for k, fn in runs.items():
                times[k].append(_time(fn, steps))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{name:<10} {med['ours'] / med['dense']:>18.3f} {med['torch'] / med['dense']:>18.3f}"
              f"   dense step {med['dense'] * 1e3:.2f} ms")


@torch.no_grad()
def bench_export(repeats: int, steps: int) -> None:
    print(f"\n{'model':<38} {'exported/dense forward':>22}   (50% channels per group, eval mode)")
    for name, (cfg, shape, bs) in EXPORT_CASES.items():
        x = torch.randn(bs, *shape, generator=torch.Generator().manual_seed(0))
        dense = build_model(cfg, shape, 10, seed=0).eval()
        mask = compute_mask(dense, dense.state_dict(), PruneConfig(structure="structured", method="l1_structured",
                                                                   rate=0.5), 1, None, 0)
        masked = copy.deepcopy(dense)
        apply_mask(masked, mask)
        small = export_structured(masked, mask).eval()
        torch.testing.assert_close(small(x), masked(x), rtol=1e-3, atol=1e-4)
        runs = {"dense": lambda: dense(x), "small": lambda: small(x)}  # noqa: B023 (used within the iteration)
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(repeats):
            for k, fn in runs.items():
                times[k].append(_time(fn, steps))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{name:<38} {med['small'] / med['dense']:>22.3f}   dense forward {med['dense'] * 1e3:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bench_steps(args.repeats, args.steps)
    bench_export(args.repeats, args.steps)


if __name__ == "__main__":
    main()
