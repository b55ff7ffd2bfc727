"""The training loop: one run of one (level, reset), emitting typed records through a callback.

``train`` owns everything between "a model and its data" and "final weights + summary":
optimizer, lr schedule (warm-up, constant / step / cosine, resumable at any iteration for
rewind@k), seeded data order, mask enforcement after every step, per-epoch evaluation,
divergence detection, and the CUDA-only speed-ups (AMP, channels-last).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers.checkpoint import Checkpointer, TrainingCheckpoint, rng_state, set_rng_state, to_cpu
from trainers.config import TrainConfig
from trainers.datasets import DataSplits, Split, augment_cifar, batches
from trainers.device import is_cuda
from trainers.preemption import Preempted
from trainers.records import DENSE, EpochMetrics, LevelSummary, RecordCallback

StateDict = dict[str, Tensor]


@dataclass
class TrainResult:
    weights: StateDict  # final state_dict (parameters and buffers), copied to the CPU
    summary: LevelSummary
    snapshots: dict[int, StateDict] = field(default_factory=dict)  # iteration -> CPU state_dict
    diverged: bool = False


def cpu_state(model: nn.Module) -> StateDict:
    """A detached CPU copy of ``model.state_dict()`` (safe to keep while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return math.ceil(n_train / batch_size)


def total_iterations(cfg: TrainConfig, n_train: int) -> int:
    """The run's whole budget in optimizer steps (a rewound run does the steps after its start)."""
    if (cfg.epochs is None) == (cfg.iterations is None):
        raise ValueError(f"TrainConfig: set exactly one of epochs / iterations (got epochs={cfg.epochs}, "
                         f"iterations={cfg.iterations})")
    total = cfg.epochs * steps_per_epoch(n_train, cfg.batch_size) if cfg.epochs is not None else cfg.iterations
    if total <= 0:
        raise ValueError(f"TrainConfig: the budget must be positive, got {total} iterations")
    return total


def lr_at(cfg: TrainConfig, iteration: int, spe: int, total: int, base_lr: float | None = None) -> float:
    """Learning rate for the optimizer step that takes the run from ``iteration`` to ``iteration + 1``.

    Step milestones are in epochs (epoch = iteration // spe); cosine anneals to 0 at ``total``;
    the linear warm-up multiplies whichever schedule over the first ``warmup_iterations`` steps.
    """
    lr = cfg.lr if base_lr is None else base_lr
    if cfg.schedule == "step":
        epoch = iteration // spe
        lr *= cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m)
    elif cfg.schedule == "cosine":
        lr *= 0.5 * (1.0 + math.cos(math.pi * min(iteration, total) / total))
    elif cfg.schedule != "constant":
        raise ValueError(f"TrainConfig.schedule: expected constant | step | cosine, got {cfg.schedule!r}")
    if iteration < cfg.warmup_iterations:
        lr *= (iteration + 1) / cfg.warmup_iterations
    return lr


def _make_optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"TrainConfig.optimizer: expected sgd | adam, got {cfg.optimizer!r}")


class MaskEnforcer:
    """Keeps masked entries exactly zero: multiplies the masked parameters and their optimizer
    state (SGD momentum, Adam moments) by float masks precomputed on the device, with one
    ``torch._foreach_mul_`` per tensor list, so a pruned weight can never come back."""

    _STATE_KEYS = ("momentum_buffer", "exp_avg", "exp_avg_sq")

    def __init__(self, model: nn.Module, mask: dict[str, Tensor], device: torch.device):
        named = dict(model.named_parameters())
        self.params: list[Tensor] = []
        self.masks: list[Tensor] = []
        for name, m in mask.items():
            if name not in named:
                raise ValueError(f"mask: {name!r} is not a parameter of {type(model).__name__}")
            p = named[name]
            if tuple(m.shape) != tuple(p.shape):
                raise ValueError(f"mask: {name!r} has shape {tuple(m.shape)}, the parameter has {tuple(p.shape)}")
            self.params.append(p)
            self.masks.append(m.to(device=device, dtype=p.dtype))

    @torch.no_grad()
    def apply(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        if not self.params:
            return
        torch._foreach_mul_(self.params, self.masks)
        if optimizer is None:
            return
        for key in self._STATE_KEYS:
            bufs, ms = [], []
            for p, m in zip(self.params, self.masks):
                buf = optimizer.state.get(p, {}).get(key)
                if buf is not None:
                    bufs.append(buf)
                    ms.append(m)
            if bufs:
                torch._foreach_mul_(bufs, ms)


@dataclass
class _EvalRow:
    epoch: int
    iteration: int
    train_loss: float
    test_loss: float
    test_acc: float
    val_loss: float | None
    val_acc: float | None


def task_loss(out: Tensor, y: Tensor, task: str, reduction: str = "mean") -> Tensor:
    """The task's loss: cross-entropy on class labels; for regression the squared error averaged
    over outputs (``"sum"`` sums it over examples), so train and test losses mean the same."""
    if task == "regression":
        per = F.mse_loss(out.float(), y, reduction="none").flatten(1).mean(1)
        return per.sum() if reduction == "sum" else per.mean()
    return F.cross_entropy(out.float(), y, reduction=reduction)


def n_correct(out: Tensor, y: Tensor, task: str) -> Tensor:
    """Correct predictions of a classification batch; regression has no accuracy (NaN)."""
    if task == "regression":
        return torch.full((), float("nan"), device=out.device, dtype=torch.float64)
    return (out.argmax(1) == y).sum()


def evaluate(model: nn.Module, split: Split, batch_size: int, amp: contextlib.AbstractContextManager,
             channels_last: bool, task: str = "classification") -> tuple[float, float]:
    """Mean loss (``task_loss``) and accuracy (NaN for regression) of ``model`` on ``split``
    (eval mode, no grad)."""
    model.eval()
    loss = torch.zeros((), device=split.x.device, dtype=torch.float64)
    correct = torch.zeros((), device=split.x.device, dtype=torch.float64)
    with torch.inference_mode():
        for start in range(0, len(split), batch_size):
            x, y = split.x[start : start + batch_size], split.y[start : start + batch_size]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with amp:
                out = model(x)
            loss += task_loss(out, y, task, reduction="sum").double()
            correct += n_correct(out, y, task)
    n = max(len(split), 1)
    return loss.item() / n, correct.item() / n


def _epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    # One generator per (seed, epoch, stream): a run resumed at iteration k draws exactly the
    # batches the full run drew from k on, without replaying the earlier epochs.
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 4 + stream)


def train(model: nn.Module, data: DataSplits, cfg: TrainConfig, *, device: torch.device | str, seed: int,
          level: int = 0, reset: str = DENSE, density: float = 1.0, on_record: RecordCallback | None = None,
          mask: dict[str, Tensor] | None = None, start_iteration: int = 0,
          snapshot_iterations: tuple[int, ...] | list[int] = (), lr_override: float | None = None,
          checkpointer: Checkpointer | None = None, resume: TrainingCheckpoint | None = None) -> TrainResult:
    """Train ``model`` in place on ``data`` and return its final weights and summary.

    - Budget: ``cfg.epochs`` or ``cfg.iterations``; ``start_iteration=k`` skips the first k steps
      (lr schedule and data order continue from k; the run does the remaining steps).
    - ``mask`` (param name -> bool tensor) is applied before training and after every step.
    - ``lr_override`` replaces ``cfg.lr`` as the schedule's base lr (fine-tuning).
    - Records: one ``EpochMetrics`` per split (train, val if non-empty, test) after every epoch
      (and after a final partial epoch), then one ``LevelSummary``, all through ``on_record``.
    - ``snapshot_iterations``: CPU copies of the state_dict after that many steps (0 = initial).
    - A non-finite training loss stops the run: status "diverged" with a reason, never raised.
    - ``checkpointer`` (trainers.checkpoint): saves a ``TrainingCheckpoint`` when one is due, at
      the end of a batch or of an epoch (never after the last epoch: the run is then finished);
      on a preemption request it saves at the end of the current batch and raises ``Preempted``.
    - ``resume``: a checkpoint of this same run (same arguments; refused otherwise) to continue
      from. The records it holds are emitted again first, so ``on_record`` sees exactly the
      records of an uninterrupted run, and weights, records and summary equal that run's.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    emit = on_record or (lambda record: None)
    n_train = len(data.train)
    if n_train == 0:
        raise ValueError("train: the training split is empty")
    spe = steps_per_epoch(n_train, cfg.batch_size)
    total = total_iterations(cfg, n_train)
    if not 0 <= start_iteration < total:
        raise ValueError(f"train: start_iteration must be in [0, {total}), got {start_iteration}")
    base_lr = cfg.lr if lr_override is None else lr_override
    run_id = _run_identity(cfg, seed=seed, level=level, reset=reset, density=density, start_iteration=start_iteration,
                           base_lr=base_lr, n_train=n_train, mask=mask, snapshot_iterations=snapshot_iterations)
    if resume is not None:
        resume.check_run(run_id)

    cuda = is_cuda(device)
    channels_last = cuda and len(data.input_shape) == 3
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16

    def amp() -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=amp_dtype) if cuda else contextlib.nullcontext()

    scaler = torch.amp.GradScaler("cuda", enabled=cuda and amp_dtype == torch.float16)
    optimizer = _make_optimizer(model, cfg, lr_at(cfg, start_iteration, spe, total, base_lr))
    enforcer = MaskEnforcer(model, mask or {}, device)
    enforcer.apply()

    snaps = set(int(k) for k in snapshot_iterations)
    snapshots: dict[int, StateDict] = {}
    if start_iteration in snaps:
        snapshots[start_iteration] = cpu_state(model)

    rows: list[_EvalRow] = []
    emitted: list[EpochMetrics] = []  # what a checkpoint replays on resume
    reason: str | None = None
    it = start_iteration
    epoch = start_iteration // spe  # epochs completed before this run's first step
    lr = base_lr
    last_train_loss = float("nan")
    partial = None  # (loss sum, correct, seen) of the epoch a mid-epoch checkpoint interrupted
    aug_state = None
    if resume is not None:
        model.load_state_dict(resume.model)
        # Optimizer.load_state_dict may keep the given tensors as its state: clone, so stepping
        # never alters the checkpoint object (a caller may resume from it twice).
        optimizer.load_state_dict(to_cpu(resume.optimizer))
        if resume.scaler:
            scaler.load_state_dict(resume.scaler)
        set_rng_state(resume.rng)
        it, epoch, lr, partial, aug_state = resume.iteration, resume.epoch, resume.lr, resume.partial, resume.aug_rng
        rows = [_EvalRow(**r) for r in resume.rows]
        snapshots = dict(resume.snapshots)
        t0 -= resume.seconds
        for record in resume.records:
            emitted.append(record)
            emit(record)
        if rows:
            last_train_loss = rows[-1].train_loss

    def capture(mid_epoch: bool) -> TrainingCheckpoint:
        return TrainingCheckpoint(
            run=run_id, iteration=it, epoch=epoch, model=cpu_state(model), optimizer=to_cpu(optimizer.state_dict()),
            scaler=to_cpu(scaler.state_dict()) if scaler.is_enabled() else {}, rng=rng_state(),
            aug_rng=aug_gen.get_state() if mid_epoch else None,
            partial=(to_cpu(loss_sum), to_cpu(correct), seen) if mid_epoch else None,
            rows=[dataclasses.asdict(r) for r in rows], records=list(emitted), snapshots=dict(snapshots),
            lr=lr, seconds=time.perf_counter() - t0)

    if checkpointer is not None:
        checkpointer.start(epoch)
    while it < total and reason is None:
        skip = it - epoch * spe  # batches of this epoch already done (only when resuming mid-epoch)
        gen = _epoch_generator(seed, epoch, 0)
        aug_gen = _epoch_generator(seed, epoch, 1)
        model.train()
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.float64)
        seen = 0
        if partial is not None:  # resuming inside this epoch: its sums and augmentation draws so far
            loss_sum, correct = partial[0].to(device, copy=True), partial[1].to(device, copy=True)
            seen = partial[2]
            aug_gen.set_state(aug_state)
            partial = aug_state = None
        for b, (x, y) in enumerate(batches(data.train, cfg.batch_size, gen)):
            if b < skip:
                continue
            if it >= total:
                break
            if cfg.augment:
                x = augment_cifar(x, aug_gen)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            lr = lr_at(cfg, it, spe, total, base_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with amp():
                out = model(x)
                loss = task_loss(out, y, data.task)
            # On CPU the check is free; on CUDA it syncs, so only every 25 steps and at epoch end.
            if (not cuda or it % 25 == 0) and not torch.isfinite(loss):
                reason = f"non-finite training loss ({loss.item()}) at iteration {it}"
                break
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            enforcer.apply(optimizer)
            it += 1
            loss_sum += loss.detach().double() * len(y)
            correct += n_correct(out, y, data.task)
            seen += len(y)
            if it in snaps:
                snapshots[it] = cpu_state(model)
            # The epoch's last batch defers to the epoch-end checkpoint (taken after its evaluation).
            if checkpointer is not None and b < spe - 1 and it < total and checkpointer.due_in_epoch():
                checkpointer.write(lambda: capture(mid_epoch=True))
                if checkpointer.preempted:
                    raise Preempted(it)
        epoch += 1
        if reason is None and not math.isfinite(loss_sum.item()):
            reason = f"non-finite training loss in epoch {epoch} (by iteration {it})"
        if reason is not None:
            break
        last_train_loss = loss_sum.item() / max(seen, 1)
        train_acc = correct.item() / max(seen, 1)
        test_loss, test_acc = evaluate(model, data.test, cfg.eval_batch_size, amp(), channels_last, data.task)
        val = (evaluate(model, data.val, cfg.eval_batch_size, amp(), channels_last, data.task)
               if len(data.val) else None)
        common = dict(level=level, reset=reset, density=density, epoch=epoch, iteration=it, lr=lr)
        epoch_records = [EpochMetrics(split="train", loss=last_train_loss, accuracy=train_acc, **common)]
        if val is not None:
            epoch_records.append(EpochMetrics(split="val", loss=val[0], accuracy=val[1], **common))
        epoch_records.append(EpochMetrics(split="test", loss=test_loss, accuracy=test_acc, **common))
        for record in epoch_records:
            emitted.append(record)
            emit(record)
        if not math.isfinite(test_loss):
            reason = f"non-finite test loss after epoch {epoch} (iteration {it})"
        rows.append(_EvalRow(epoch, it, last_train_loss, test_loss, test_acc,
                             val[0] if val else None, val[1] if val else None))
        if checkpointer is not None and reason is None and it < total and checkpointer.due_after_epoch(epoch):
            checkpointer.write(lambda: capture(mid_epoch=False))
            if checkpointer.preempted:
                raise Preempted(it)

    summary = _summarize(rows, level=level, reset=reset, density=density, reason=reason,
                         iterations=it, seconds=time.perf_counter() - t0, epochs=len(rows), task=data.task)
    emit(summary)
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    return TrainResult(weights=cpu_state(model), summary=summary, snapshots=snapshots, diverged=reason is not None)


def _run_identity(cfg: TrainConfig, *, seed: int, level: int, reset: str, density: float, start_iteration: int,
                  base_lr: float, n_train: int, mask: dict[str, Tensor] | None,
                  snapshot_iterations: tuple[int, ...] | list[int]) -> dict:
    """What a checkpoint must match to be resumed by this call (plain values: it is saved with it)."""
    return {"train": repr(cfg), "seed": seed, "level": level, "reset": reset, "density": density,
            "start_iteration": start_iteration, "base_lr": base_lr, "n_train": n_train,
            "masked": sorted(mask or {}), "kept": sum(int(m.sum()) for m in (mask or {}).values()),
            "snapshot_iterations": sorted(int(k) for k in snapshot_iterations)}


def _summarize(rows: list[_EvalRow], *, level: int, reset: str, density: float, reason: str | None,
               iterations: int, seconds: float, epochs: int, task: str = "classification") -> LevelSummary:
    nan = float("nan")
    if rows:
        # first epoch reaching the best: max accuracy, or min test loss where there is no accuracy
        best = (min(rows, key=lambda r: r.test_loss) if task == "regression" else max(rows, key=lambda r: r.test_acc))
        has_val = rows[0].val_acc is not None
        val_sel = max(rows, key=lambda r: r.val_acc).test_acc if has_val else None
        # Early stopping chooses an epoch, so it may look at validation data only: without a
        # validation split there is no early-stop iteration (the test set is never used to choose).
        stop_it = min(rows, key=lambda r: r.val_loss).iteration if has_val else None
        final, best_acc, best_epoch = rows[-1], best.test_acc, best.epoch
        final_acc, final_loss = final.test_acc, final.train_loss
        best_loss, final_test_loss = min(r.test_loss for r in rows), final.test_loss
        if task == "regression":
            val_sel = None  # no accuracy to select by
    else:
        val_sel, best_acc, best_epoch, stop_it, final_acc, final_loss = None, nan, 0, None, nan, nan
        best_loss = final_test_loss = nan
    return LevelSummary(
        level=level, reset=reset, density=density, status="diverged" if reason else "done",
        final_test_accuracy=final_acc, best_test_accuracy=best_acc, best_test_epoch=best_epoch,
        val_selected_test_accuracy=val_sel, early_stop_iteration=stop_it, final_train_loss=final_loss,
        epochs=epochs, iterations=iterations, seconds=seconds, reason=reason,
        best_test_loss=best_loss, final_test_loss=final_test_loss,
    )
