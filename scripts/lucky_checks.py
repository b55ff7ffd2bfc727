"""Luck Matters (Tian et al. 2019) at CPU scale: lucky student nodes in the teacher-student regression.

    .venv/bin/python scripts/lucky_checks.py [--epochs 40] [--seeds 0 1] [--mults 1 2 5 10]
        [--threshold 0.9] [--levels 3] [--rate 0.5]

Data: ``teacher_student`` with ``task: regression`` (MSE on the teacher's standardised outputs),
input N(0, 10^2) in 20 dims, teacher widths 10-15, 10 outputs; student ``student_mlp`` (teacher
widths x multiplier), SGD momentum 0.9, lr 0.1 cosine, batch 64. Correlations: Pearson, post-ReLU
activations over the 2,048 test inputs, student layer i vs teacher layer i (trainers.lucky).

Prints, all measured by this run:
1. Do lucky nodes win? For each teacher node that some student node ends covering (final
   correlation >= threshold), the rank of the winner's *initial* correlation with that teacher
   node among all student nodes of the layer (1 = the luckiest), and how early each covering
   node crossed the threshold vs its initial correlation (Spearman; negative = luckier converges
   sooner).
2. Winner-take-all vs over-parameterisation: per multiplier, teacher nodes covered and student
   nodes per covered teacher node.
3. Structured IMP (L1-norm neurons, iterative) vs a random structured mask of the same density:
   the initial (theta_0) correlation of kept vs pruned nodes per level.
4. Rewind vs reinit of the structured ticket: the kept nodes' best initial and final
   correlations, and teacher nodes covered after retraining.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from trainers.config import DataConfig, ModelConfig, PruneConfig, TrainConfig
from trainers.datasets import load_data, teacher_student_setup
from trainers.lucky import correlations, node_matches, student_activations, teacher_activations
from trainers.masks import apply_mask
from trainers.models import build_model
from trainers.pruning import compute_mask
from trainers.records import EpochMetrics
from trainers.resets import derive_seed
from trainers.training import train

CPU = torch.device("cpu")
WIDTHS = [10, 15]


def _data_cfg() -> DataConfig:
    return DataConfig("teacher_student", options={"task": "regression", "widths": WIDTHS})


def _corr_mats(cfg: DataConfig, x: torch.Tensor, weights: dict, mask: dict | None = None) -> list[np.ndarray]:
    ts = teacher_student_setup(cfg.options)
    w = {k: v * (mask[k] if mask and k in mask else 1) for k, v in weights.items()}
    t = teacher_activations(ts.teacher, x.double() * ts.input_scale)
    s = student_activations(w, len(WIDTHS), x)
    return [correlations(s[i], t[i]).numpy() for i in range(len(WIDTHS))]


def _coverage(mats: list[np.ndarray], thr: float) -> list[tuple[int, float]]:
    """Per layer: (teacher nodes covered, mean student nodes per covered teacher node), a student
    node covering the teacher node it is best correlated with when that correlation >= thr."""
    out = []
    for c in mats:
        filled = np.nan_to_num(c, nan=-1.0)
        best, arg = filled.max(1), filled.argmax(1)
        counts = np.bincount(arg[best >= thr], minlength=c.shape[1])
        covered = counts[counts > 0]
        out.append((int(len(covered)), float(covered.mean()) if len(covered) else 0.0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--mults", type=int, nargs="+", default=[1, 2, 5, 10])
    ap.add_argument("--mult", type=int, default=10, help="student multiplier of sections 1, 3, 4")
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--lr", type=float, default=0.1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    cfg = _data_cfg()
    data = load_data(cfg, 0, CPU)
    x = data.test.x
    tcfg = TrainConfig(lr=args.lr, momentum=0.9, weight_decay=0.0, batch_size=64, epochs=args.epochs,
                       schedule="cosine")
    thr = args.threshold

    def student(mult: int, seed: int):
        return build_model(ModelConfig("student_mlp", {"teacher_widths": WIDTHS, "multiplier": mult}),
                           data.input_shape, data.num_classes, seed)

    # ---------------------------------------------------------------- 1. lucky nodes win
    print(f"## 1. Do lucky nodes win? student x{args.mult}, {args.epochs} epochs, threshold {thr}\n")
    print("| seed | layer | teacher nodes covered | winner's initial-correlation rank: median (of n) | "
          "winners in the initial top 5% | Spearman(initial corr, epoch reaching thr) | test MSE |")
    print("|---|---|---|---|---|---|---|")
    dense_runs = {}
    for seed in args.seeds:
        model = student(args.mult, seed)
        theta0 = {k: v.clone() for k, v in model.state_dict().items()}
        history: list[list[np.ndarray]] = [_corr_mats(cfg, x, theta0)]

        def on_record(r, model=model, history=history):
            if isinstance(r, EpochMetrics) and r.split == "test":
                history.append(_corr_mats(cfg, x, model.state_dict()))

        res = train(model, data, tcfg, device=CPU, seed=seed, on_record=on_record)
        dense_runs[seed] = (theta0, res.weights, res.summary.final_test_loss)
        for layer in range(len(WIDTHS)):
            c0, cT = history[0][layer], history[-1][layer]
            n_student = c0.shape[0]
            ranks, top, conv_init, conv_epoch = [], 0, [], []
            fT = np.nan_to_num(cT, nan=-1.0)
            best_t = fT.argmax(1)
            for j in range(c0.shape[1]):
                covering = np.where((best_t == j) & (fT.max(1) >= thr))[0]
                if not len(covering):
                    continue
                winner = covering[np.argmax(fT[covering, j])]
                order = np.argsort(-np.nan_to_num(c0[:, j], nan=-1.0), kind="stable")
                rank = int(np.where(order == winner)[0][0]) + 1
                ranks.append(rank)
                top += rank <= max(1, round(0.05 * n_student))
                for s in covering:
                    ep = next(e for e, h in enumerate(history) if np.nan_to_num(h[layer][s, j], nan=-1) >= thr)
                    conv_init.append(np.nan_to_num(c0[s, j], nan=0.0))
                    conv_epoch.append(ep)
            rho = spearmanr(conv_init, conv_epoch).statistic if len(set(conv_epoch)) > 1 else float("nan")
            med = f"{statistics.median(ranks):.0f} (of {n_student})" if ranks else "-"
            print(f"| {seed} | {layer} | {len(ranks)}/{c0.shape[1]} | {med} | {top}/{len(ranks)} | {rho:+.2f} "
                  f"(n={len(conv_init)}) | {res.summary.final_test_loss:.4f} |")

    # ---------------------------------------------------------------- 2. winner-take-all vs width
    print(f"\n## 2. Over-parameterisation: teacher nodes covered (corr >= {thr}) and student nodes per covered "
          "teacher node, after training\n")
    print("| multiplier | seed | layer 0: covered / 10, nodes per covered | layer 1: covered / 15, nodes per covered "
          "| test MSE |\n|---|---|---|---|---|")
    for mult in args.mults:
        for seed in args.seeds:
            if mult == args.mult:  # trained in section 1
                _, final, loss = dense_runs[seed]
            else:
                r = train(student(mult, seed), data, tcfg, device=CPU, seed=seed)
                final, loss = r.weights, r.summary.final_test_loss
            cov = _coverage(_corr_mats(cfg, x, final), thr)
            print(f"| {mult} | {seed} | " + " | ".join(f"{c} , {m:.2f}" for c, m in cov) + f" | {loss:.4f} |")

    # ---------------------------------------------------------------- 3 + 4. structured IMP
    print(f"\n## 3. Structured IMP (L1-norm neurons, iterative, {args.rate:.0%} of the remaining neurons per level) "
          f"vs a random structured mask: mean initial (theta_0) best correlation of kept vs pruned nodes\n")
    print("| seed | level | neuron density | layer | kept (IMP) | pruned (IMP) | kept (random) | pruned (random) |")
    print("|---|---|---|---|---|---|---|---|")
    section4 = []
    for seed in args.seeds:
        theta0, final, _ = dense_runs[seed]
        model = student(args.mult, seed)
        lvl0 = node_matches(cfg, x, theta0, final, None, level=0, reset="dense")
        init_corr = {(r.layer, r.node): (r.init_correlation if r.init_correlation is not None else np.nan)
                     for r in lvl0}
        masks = {}
        for method in ("l1_structured", "random_structured"):
            pcfg = PruneConfig(structure="structured", method=method, schedule="iterative", rate=args.rate,
                               levels=args.levels)
            prev, source = None, final
            for level in range(1, args.levels + 1):
                mask = compute_mask(model, source, pcfg, level, prev, seed)
                masks[method, level] = mask
                if method == "l1_structured":
                    # rewind: theta_0 under the mask; the driver's weights give the next level's mask
                    for reset in ("rewind", "reinit"):
                        m = student(args.mult, seed)
                        if reset == "reinit":
                            fresh = student(args.mult, derive_seed(seed, level, "reinit"))
                            m.load_state_dict(fresh.state_dict())
                        start = {k: v.clone() for k, v in m.state_dict().items()}
                        apply_mask(m, mask)
                        rr = train(m, data, tcfg, device=CPU, seed=seed, mask=mask)
                        rows = node_matches(cfg, x, start, rr.weights, mask, level=level, reset=reset)
                        section4.append((seed, level, reset, rows, rr.summary.final_test_loss))
                        if reset == "rewind":
                            source = rr.weights
                else:
                    source = final  # the random control ignores the weights
                prev = mask
        for level in range(1, args.levels + 1):
            for layer in range(len(WIDTHS)):
                cells = []
                for method in ("l1_structured", "random_structured"):
                    alive = masks[method, level][f"hidden.{layer}.weight"].any(dim=1).numpy()
                    vals = np.array([init_corr[layer, n] for n in range(len(alive))])
                    cells += [np.nanmean(vals[alive]), np.nanmean(vals[~alive]) if (~alive).any() else np.nan]
                dens = masks["l1_structured", level][f"hidden.{layer}.weight"].any(dim=1).float().mean().item()
                print(f"| {seed} | {level} | {dens:.3f} | {layer} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")

    print("\n## 4. Structured ticket, rewind vs reinit: kept nodes' mean best correlation at the start and the "
          f"end of retraining, teacher nodes covered (corr >= {thr}) per layer, test MSE\n")
    print("| seed | level | reset | layer 0: init, final, covered/10 | layer 1: init, final, covered/15 | test MSE |")
    print("|---|---|---|---|---|---|")
    for seed, level, reset, rows, loss in section4:
        cells = []
        for layer, n_t in ((0, 10), (1, 15)):
            kept = [r for r in rows if r.layer == layer and r.fan_in_kept > 0]
            i0 = np.nanmean([r.init_correlation if r.init_correlation is not None else np.nan for r in kept])
            i1 = np.nanmean([r.final_correlation if r.final_correlation is not None else np.nan for r in kept])
            cov = len({r.final_teacher for r in kept if (r.final_correlation or -1) >= thr})
            cells.append(f"{i0:.3f}, {i1:.3f}, {cov}/{n_t}")
        print(f"| {seed} | {level} | {reset} | " + " | ".join(cells) + f" | {loss:.4f} |")
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
