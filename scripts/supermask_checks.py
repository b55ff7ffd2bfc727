"""Edge-popup's qualitative findings at CPU scale, measured on MNIST-1D (generated locally).

    .venv/bin/python scripts/supermask_checks.py [--epochs 20] [--seeds 0 1] [--width 256]
        [--ks 0.05 0.1 0.3 0.5 0.7 0.9 1.0] [--widths 32 128 512] [--lr 0.1]

Ramanujan et al. (2020) found: (1) accuracy vs k (fraction of weights kept per layer) rises,
then falls, best in the middle; (2) wider nets give better supermasks; (3) signed-constant
weights beat Kaiming-normal ones. This script measures all three on an MLP 40-W-W-10, plus
(4) the Jaccard overlap, layer by layer at equal density, of a supermask with the one-shot
global-magnitude ticket of a dense net trained from the same init (and the overlap two random
masks of those densities would have). Every number printed is measured by this run: best test
accuracy over epochs, mean +- std over seeds. Scores: SGD momentum 0.9, wd 1e-4, cosine lr.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from trainers.config import DataConfig, ModelConfig, PruneConfig, TrainConfig
from trainers.datasets import load_data
from trainers.models import build_model
from trainers.pruning import compute_mask
from trainers.supermask import SupermaskConfig, densities_of, mask_overlap, train_supermask, uniform_densities
from trainers.training import train

CPU = torch.device("cpu")


def _fmt(xs: list[float]) -> str:
    m = statistics.mean(xs)
    s = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{100 * m:.1f} ± {100 * s:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--ks", type=float, nargs="+", default=[0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
    ap.add_argument("--widths", type=int, nargs="+", default=[32, 128, 512])
    ap.add_argument("--densities", type=float, nargs="+", default=[0.5, 0.2, 0.05])
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--root", default=None, help="cache dir of the generated MNIST-1D")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    data = load_data(DataConfig("mnist1d", root=args.root), 0, CPU)
    cfg = TrainConfig(lr=args.lr, momentum=0.9, weight_decay=1e-4, batch_size=64, epochs=args.epochs)

    def net(width: int, seed: int):
        return build_model(ModelConfig("mlp", {"widths": [width, width]}), data.input_shape, data.num_classes, seed)

    cache: dict[tuple, float] = {}

    def acc(k: float, width: int, init: str, seed: int) -> float:
        key = (k, width, init, seed)
        if key not in cache:
            n = net(width, seed)
            r = train_supermask(n, data, cfg, uniform_densities(n, k), SupermaskConfig(weight_init=init),
                                device=CPU, seed=seed)
            cache[key] = r.summary.best_test_accuracy
        return cache[key]

    inits = ("signed_constant", "kaiming_normal")
    print(f"## 1. Best test accuracy (%) vs k, MLP 40-{args.width}-{args.width}-10, {args.epochs} epochs, "
          f"seeds {args.seeds}\n")
    print("| k | " + " | ".join(inits) + " |\n|---|---|---|")
    for k in args.ks:
        print(f"| {k} | " + " | ".join(_fmt([acc(k, args.width, i, s) for s in args.seeds]) for i in inits) + " |")

    print("\n## 2. Width (k = 0.5), best test accuracy (%)\n\n| width | " + " | ".join(inits) + " |\n|---|---|---|")
    for w in args.widths:
        print(f"| {w} | " + " | ".join(_fmt([acc(0.5, w, i, s) for s in args.seeds]) for i in inits) + " |")

    print("\n## 3. signed_constant − kaiming_normal, points, per (k, seed) at width", args.width)
    diffs = [100 * (acc(k, args.width, inits[0], s) - acc(k, args.width, inits[1], s))
             for k in args.ks if 0.1 <= k <= 0.9 for s in args.seeds]
    print(f"\nmean {statistics.mean(diffs):+.2f}, positive in {sum(d > 0 for d in diffs)} of {len(diffs)} "
          f"(k in [0.1, 0.9])")

    print(f"\n## 4. Supermask vs one-shot magnitude ticket (global, from the dense net trained from the same "
          f"init), width {args.width}\n")
    print("| density | seed | dense acc | ticket acc (rewind) | supermask acc (init) | Jaccard all | chance | "
          "Jaccard per layer (chance) |\n|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        dense = net(args.width, seed)
        theta0 = {k: v.clone() for k, v in dense.state_dict().items()}
        d_res = train(dense, data, cfg, device=CPU, seed=seed)
        for d in args.densities:
            # one-shot to density d: rate r at level 1 gives density 1 - r
            ticket = compute_mask(dense, d_res.weights, PruneConfig(rate=1 - d, levels=1, schedule="oneshot"), 1,
                                  None, seed)
            t_net = net(args.width, seed)
            t_net.load_state_dict(theta0)
            t_acc = train(t_net, data, cfg, device=CPU, seed=seed, mask=ticket).summary.best_test_accuracy
            for init in ("kaiming_normal", "signed_constant"):
                s_net = net(args.width, seed)
                sm = train_supermask(s_net, data, cfg, densities_of(ticket, s_net),
                                     SupermaskConfig(weight_init=init), device=CPU, seed=seed)
                ov = mask_overlap(sm.mask, ticket, s_net.prunable())
                per = ", ".join(f"{n.split('.')[0]}{n.split('.')[1] if n[0] == 'h' else ''}: {j:.3f} ({c:.3f})"
                                for n, (j, c) in ov.items() if n != "all")
                print(f"| {d} | {seed} | {100 * d_res.summary.best_test_accuracy:.1f} | {100 * t_acc:.1f} | "
                      f"{100 * sm.summary.best_test_accuracy:.1f} ({init}) | {ov['all'][0]:.3f} | "
                      f"{ov['all'][1]:.3f} | {per} |")
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
