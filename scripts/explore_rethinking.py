"""Choose the CPU-scale setup of campaigns/rethinking_lr_cpu.yaml by experiment (no Ray).

Two probes, both through the real trainers API (trainers.trajectory), one CPU thread:

    # dense accuracy vs epochs at each lr: does each lr converge within the budget? s/training?
    .venv/bin/python scripts/explore_rethinking.py dense --arch mlp --lrs 0.1 0.01 --epochs 30 --seeds 0

    # rewind - reinit gap (best test accuracy, paired by seed) at a few one-shot levels
    .venv/bin/python scripts/explore_rethinking.py gaps --arch mlp --lrs 0.1 0.01 --epochs 30 \
        --seeds 0 1 2 --levels 2 5 8 --rate 0.4 --structures unstructured structured

Common options: --dataset (mnist1d | digits | teacher_student), --arch, --options / --data-options (model /
dataset options as JSON), --schedule (cosine | step: step uses milestones at 50% and 75% of the
budget, as the paper's 80/120 of 160), --batch. Prints Markdown tables; every number is
measured by the run. Seconds per training depend on machine load (shared cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from trainers.config import DataConfig, ModelConfig, PruneConfig, RunSetup, TrainConfig
from trainers.records import EpochMetrics
from trainers.trajectory import level_masks, retrain, train_dense


def make_setup(args, lr: float, seed: int, structure: str = "unstructured", schedule: str = "oneshot") -> RunSetup:
    milestones = (args.epochs // 2, (3 * args.epochs) // 4) if args.schedule == "step" else ()
    method = "magnitude_global" if structure == "unstructured" else "l1_structured"
    return RunSetup(
        data=DataConfig(args.dataset, options=json.loads(args.data_options)),
        model=ModelConfig(args.arch, json.loads(args.options)),
        train=TrainConfig(lr=lr, momentum=0.9, weight_decay=args.wd, batch_size=args.batch, epochs=args.epochs,
                          schedule=args.schedule, milestones=milestones),
        prune=PruneConfig(structure=structure, method=method, schedule=schedule, rate=args.rate,
                          levels=max(args.levels or [1])),
        seed=seed,
    )


def dense_probe(args) -> None:
    print("| dataset | arch | lr | seed | epochs | best test | final test | final train loss | "
          "test acc at 25/50/75% of budget | s/training wall / CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for lr in args.lrs:
        for seed in args.seeds:
            curve: dict[int, float] = {}

            def on_record(rec, curve=curve):
                if isinstance(rec, EpochMetrics) and rec.split == "test":
                    curve[rec.epoch] = rec.accuracy

            c0 = time.process_time()
            d = train_dense(make_setup(args, lr, seed), device="cpu", on_record=on_record)
            cpu = time.process_time() - c0
            s = d.summary
            marks = "/".join(f"{curve.get(max(1, args.epochs * q // 4), float('nan')):.3f}" for q in (1, 2, 3))
            print(f"| {args.dataset} | {args.arch} | {lr} | {seed} | {args.epochs} | {s.best_test_accuracy:.3f} | "
                  f"{s.final_test_accuracy:.3f} | {s.final_train_loss:.4f} | {marks} | {s.seconds:.1f} / {cpu:.1f} |", flush=True)


def gaps_probe(args) -> None:
    # rows[(lr, structure, level)] -> list of (density, rewind, reinit) over seeds
    rows: dict[tuple, list] = {}
    dense_acc: dict[float, list] = {}
    secs: list[float] = []
    t0, c0 = time.perf_counter(), time.process_time()
    for lr in args.lrs:
        for seed in args.seeds:
            base = make_setup(args, lr, seed)
            dense = train_dense(base, device="cpu")
            dense_acc.setdefault(lr, []).append(dense.summary.best_test_accuracy)
            secs.append(dense.summary.seconds)
            for structure in args.structures:
                setup = make_setup(args, lr, seed, structure, "oneshot")
                for level in args.levels:
                    mask = level_masks(setup, dense, level, None, None)
                    acc = {}
                    for reset in ("rewind", "reinit"):
                        br = retrain(setup, level=level, mask=mask, reset=reset, dense=dense, source=dense.final,
                                     device="cpu")
                        acc[reset] = br.summary.best_test_accuracy
                        secs.append(br.summary.seconds)
                    rows.setdefault((lr, structure, level), []).append((br.summary.density, acc["rewind"],
                                                                         acc["reinit"]))
            print(f"# lr {lr} seed {seed} done, {time.perf_counter() - t0:.0f} s elapsed", flush=True)

    def ms(xs):
        return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"

    print(f"\n{args.arch} on {args.dataset}, {args.epochs} epochs {args.schedule}, batch {args.batch}, one-shot rate "
          f"{args.rate}, seeds {args.seeds}; best test accuracy, mean ± std over seeds; "
          f"{statistics.mean(secs):.1f} s/training wall, {(time.process_time() - c0) / len(secs):.1f} s CPU "
          f"(mean of {len(secs)})")
    for lr in args.lrs:
        print(f"dense lr {lr}: {ms(dense_acc[lr])}")
    print("| lr | structure | level | density | rewind | reinit | rewind − reinit (paired) |")
    print("|---|---|---|---|---|---|---|")
    for (lr, structure, level), vals in rows.items():
        dens = vals[0][0]
        rw, ri = [v[1] for v in vals], [v[2] for v in vals]
        print(f"| {lr} | {structure} | {level} | {dens:.3f} | {ms(rw)} | {ms(ri)} | "
              f"{ms([a - b for a, b in zip(rw, ri)])} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("probe", choices=["dense", "gaps"])
    ap.add_argument("--dataset", default="mnist1d")
    ap.add_argument("--arch", default="mlp")
    ap.add_argument("--options", default="{}", help="model options as JSON, e.g. '{\"widths\": [256, 256]}'")
    ap.add_argument("--data-options", default="{}", help="dataset options as JSON, e.g. '{\"num_samples\": 2500}'")
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.1, 0.01])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--schedule", choices=["cosine", "step", "constant"], default="cosine")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--wd", type=float, default=1e-4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[2, 5, 8])
    ap.add_argument("--rate", type=float, default=0.4)
    ap.add_argument("--structures", nargs="+", default=["unstructured", "structured"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    (dense_probe if args.probe == "dense" else gaps_probe)(args)


if __name__ == "__main__":
    main()
