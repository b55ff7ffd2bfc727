"""Lucky nodes (Tian et al. 2019, "Luck Matters"): how student hidden nodes align with teacher nodes.

In the teacher-student setting (``teacher_student`` dataset, ``student_mlp`` model), hidden layer
i of the student faces hidden layer i of the teacher. For every student node we measure, over
inputs from the data distribution, the Pearson correlation of its activation (after the ReLU)
with every teacher node's activation in the same layer, and keep the best one and which teacher
node it is -- at the start of a training run and at its end. A node whose *initial* best
correlation is high is "lucky"; the paper's claim is that lucky nodes converge to their teacher
node first and take it over (winner-take-all), that pruning keeps them, and that
re-initialising loses them.

A node whose activation is constant over the inputs (dead ReLU, or every incoming weight pruned)
has no correlation: its row carries None. ``NodeMatch`` rows also carry the fraction of the
node's incoming weights the run's mask keeps (0 = the node is pruned away, structured pruning)
and the norm of its outgoing weights after training (Tian et al.: non-lucky nodes end with
near-zero fan-out).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from trainers.config import DataConfig
from trainers.datasets import Teacher, teacher_student_setup
from trainers.masks import Mask, Weights
from trainers.models.mlp import MLP
from trainers.records import NodeMatch


def teacher_activations(teacher: Teacher, x_raw: Tensor) -> list[Tensor]:
    """Post-ReLU activations (N, width) of each teacher hidden layer on raw inputs."""
    out, h = [], x_raw.double()
    for w, b in zip(teacher.weights[:-1], teacher.biases[:-1]):
        h = torch.relu(h @ w.double().T + b.double())
        out.append(h)
    return out


def student_activations(weights: Mapping[str, Tensor], n_hidden: int, x: Tensor) -> list[Tensor]:
    """Post-ReLU activations of the student MLP's hidden layers ``hidden.<i>`` with ``weights``
    (a state dict, masked weights already zero), in float64."""
    out, h = [], x.flatten(1).double()
    for i in range(n_hidden):
        w, b = weights[f"hidden.{i}.weight"].double(), weights[f"hidden.{i}.bias"].double()
        h = torch.relu(h @ w.T + b)
        out.append(h)
    return out


def correlations(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation (S, T) between the columns of ``a`` (N, S) and ``b`` (N, T); NaN where
    a column is constant."""
    a = a.double() - a.double().mean(0)
    b = b.double() - b.double().mean(0)
    na, nb = a.norm(dim=0), b.norm(dim=0)
    c = (a.T @ b) / (na[:, None] * nb[None, :])
    return torch.where((na[:, None] > 0) & (nb[None, :] > 0), c, torch.full_like(c, float("nan")))


def best_matches(corr: Tensor) -> tuple[list[float | None], list[int | None]]:
    """Per row of ``corr``: the highest correlation and its column (None for a NaN row; a NaN
    column -- a dead teacher node -- never wins)."""
    filled = torch.nan_to_num(corr, nan=float("-inf"))
    val, idx = filled.max(dim=1)
    vals = [None if v == float("-inf") else float(v) for v in val.tolist()]
    return vals, [None if v is None else int(i) for v, i in zip(vals, idx.tolist())]


def node_matches(data_cfg: DataConfig, x: Tensor, start: Weights, final: Weights, mask: Mask | None, *,
                 level: int, reset: str) -> list[NodeMatch]:
    """One ``NodeMatch`` per student hidden node for a run that started at ``start`` and ended at
    ``final`` (state dicts of a ``student_mlp`` / ``mlp``) under ``mask`` (None: dense), measured on
    the student-scale inputs ``x`` of a ``teacher_student`` dataset ``data_cfg``."""
    if data_cfg.dataset != "teacher_student":
        raise ValueError(f"lucky nodes: DataConfig.dataset must be 'teacher_student', got {data_cfg.dataset!r}")
    ts = teacher_student_setup(data_cfg.options)
    n_hidden = sum(1 for k in final if k.startswith("hidden.") and k.endswith(".weight"))
    t_depth = len(ts.teacher.weights) - 1
    if n_hidden != t_depth:
        raise ValueError(f"lucky nodes: the student has {n_hidden} hidden layers, the teacher {t_depth} "
                         f"(data.options.widths); use student_mlp with teacher_widths equal to the teacher's")
    x = x.detach().cpu()
    teacher = teacher_activations(ts.teacher, x.flatten(1).double() * ts.input_scale)

    def masked(w: Weights) -> Weights:
        return {k: v.detach().cpu() * (mask[k].cpu() if mask and k in mask else 1) for k, v in w.items()}

    start_m, final_m = masked(start), masked(final)
    s0 = student_activations(start_m, n_hidden, x)
    s1 = student_activations(final_m, n_hidden, x)
    rows: list[NodeMatch] = []
    for i in range(n_hidden):
        v0, t0 = best_matches(correlations(s0[i], teacher[i]))
        v1, t1 = best_matches(correlations(s1[i], teacher[i]))
        name = f"hidden.{i}.weight"
        fan_in = (mask[name].float().mean(1) if mask and name in mask else torch.ones(len(v0))).tolist()
        nxt = f"hidden.{i + 1}.weight" if i + 1 < n_hidden else "out.weight"
        fan_out = final_m[nxt].double().norm(dim=0).tolist()
        for n in range(len(v0)):
            rows.append(NodeMatch(level=level, reset=reset, layer=i, node=n, init_teacher=t0[n],
                                  init_correlation=v0[n], final_teacher=t1[n], final_correlation=v1[n],
                                  fan_in_kept=float(fan_in[n]), fan_out_norm=float(fan_out[n])))
    return rows


def is_student(model: object) -> bool:
    """Whether lucky-node rows can be measured for ``model`` (an MLP with ReLU hidden layers)."""
    return isinstance(model, MLP)
