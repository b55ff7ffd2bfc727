"""Short iterative-magnitude-pruning run on MNIST-1D at two learning rates: rewind (winning
ticket) vs reinit (same mask, fresh random init), best test accuracy per level.

    .venv/bin/python scripts/imp_demo.py [--lrs 0.1 0.01] [--epochs 10] [--levels 5] [--rate 0.4] [--seed 0]

Prints one Markdown table; every number is measured by this run (CPU, deterministic per seed).
"""

from __future__ import annotations

import argparse
import time

import torch

from trainers.config import DataConfig, ModelConfig, PruneConfig, RunSetup, TrainConfig
from trainers.trajectory import run_trajectory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.1, 0.01])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--levels", type=int, default=5)
    ap.add_argument("--rate", type=float, default=0.4)
    ap.add_argument("--arch", default="mlp")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for lr in args.lrs:
        t0 = time.perf_counter()
        setup = RunSetup(
            data=DataConfig("mnist1d"),
            model=ModelConfig(args.arch),
            train=TrainConfig(lr=lr, momentum=0.9, weight_decay=1e-4, batch_size=64, epochs=args.epochs,
                              schedule="step", milestones=(args.epochs // 2,)),
            # LTH paper: the output layer is pruned at half the rate.
            prune=PruneConfig(rate=args.rate, levels=args.levels, schedule="iterative",
                              layer_rates={"output": args.rate / 2}),
            seed=args.seed,
        )
        res = run_trajectory(setup, ["rewind", "reinit"], device="cpu", on_record=None)
        by = {(s.level, s.reset): s for s in res.summaries}
        rows.append((lr, 0, 1.0, res.dense.summary.best_test_accuracy, None))
        for lv in range(1, args.levels + 1):
            rw, ri = by[(lv, "rewind")], by[(lv, "reinit")]
            rows.append((lr, lv, rw.density, rw.best_test_accuracy, ri.best_test_accuracy))
        print(f"# lr {lr}: {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"\n{args.arch} on MNIST-1D, iterative magnitude_global rate {args.rate} (output {args.rate / 2}), "
          f"{args.epochs} epochs/level, seed {args.seed}; best test accuracy")
    print("| lr | level | density | rewind | reinit | rewind - reinit |")
    print("|---|---|---|---|---|---|")
    for lr, lv, d, rw, ri in rows:
        if ri is None:
            print(f"| {lr} | 0 (dense) | 1.000 | {rw:.3f} | | |")
        else:
            print(f"| {lr} | {lv} | {d:.3f} | {rw:.3f} | {ri:.3f} | {rw - ri:+.3f} |")


if __name__ == "__main__":
    main()
