"""``python -m trainers --dataset mnist1d --arch mlp``: one short training run, accuracy printed.

With ``--checkpoint PATH`` the run is preemptible: it checkpoints to PATH (every
``--checkpoint-every-epochs`` epochs or ``--checkpoint-every-minutes`` minutes), a SIGTERM makes it
checkpoint at the end of the current batch and exit with 143, and the same command run again
resumes from PATH; the file is removed when the training finishes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from pathlib import Path

import torch

from trainers.checkpoint import DEFAULT_EVERY_MINUTES, Checkpointer, file_sink, load_file
from trainers.config import DataConfig, ModelConfig, TrainConfig
from trainers.datasets import load_data
from trainers.device import pick_device
from trainers.models import build_model
from trainers.preemption import EXIT_CODE, Preempted, sigterm_checkpoints
from trainers.records import EpochMetrics
from trainers.training import train


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m trainers", description=__doc__)
    p.add_argument("--dataset", default="mnist1d")
    p.add_argument("--arch", default="mlp")
    p.add_argument("--root", default=None, help="dataset root / cache directory")
    p.add_argument("--data-options", default="{}", help="JSON dict of dataset options")
    p.add_argument("--model-options", default="{}", help="JSON dict of model options")
    p.add_argument("--optimizer", default="adam", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", default="cosine", choices=["constant", "step", "cosine"])
    p.add_argument("--val-size", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--checkpoint", default=None, help="checkpoint file: resume from it if present, save to it")
    p.add_argument("--checkpoint-every-epochs", type=int, default=None)
    p.add_argument("--checkpoint-every-minutes", type=float, default=DEFAULT_EVERY_MINUTES)
    p.add_argument("--save-weights", default=None, help="torch.save the final state_dict here")
    p.add_argument("--records", default=None, help="write every record as a JSON line here")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    device = pick_device(a.device)
    data = load_data(DataConfig(a.dataset, root=a.root, val_size=a.val_size, options=json.loads(a.data_options)),
                     a.seed, device)
    model = build_model(ModelConfig(a.arch, options=json.loads(a.model_options)), data.input_shape,
                        data.num_classes, a.seed)
    cfg = TrainConfig(optimizer=a.optimizer, lr=a.lr, epochs=a.epochs, batch_size=a.batch_size,
                      weight_decay=a.weight_decay, schedule=a.schedule)

    records = open(a.records, "w") if a.records else None  # noqa: SIM115 - closed below, kept open while training

    def show(r) -> None:
        if records is not None:
            records.write(json.dumps({"type": type(r).__name__, **dataclasses.asdict(r)}) + "\n")
        if isinstance(r, EpochMetrics) and r.split == "test" and not a.quiet:
            print(f"epoch {r.epoch:3d}  iter {r.iteration:6d}  lr {r.lr:.4g}  test loss {r.loss:.4f}  acc {r.accuracy:.4f}")

    checkpointer = resume = None
    if a.checkpoint:
        checkpointer = Checkpointer(file_sink(a.checkpoint), every_epochs=a.checkpoint_every_epochs,
                                    every_minutes=a.checkpoint_every_minutes)
        resume = load_file(a.checkpoint)
        if resume is not None:
            print(f"resuming from {a.checkpoint} at iteration {resume.iteration} (epoch {resume.epoch})", flush=True)
    try:
        with sigterm_checkpoints() if a.checkpoint else contextlib.nullcontext():
            res = train(model, data, cfg, device=device, seed=a.seed, on_record=show,
                        checkpointer=checkpointer, resume=resume)
    except Preempted as e:
        print(f"{e}; run the same command again to resume", flush=True)
        sys.exit(EXIT_CODE)
    finally:
        if records is not None:
            records.close()
    if a.checkpoint:
        Path(a.checkpoint).unlink(missing_ok=True)  # the training is finished: its result is the record
    if a.save_weights:
        torch.save(res.weights, a.save_weights)
    s = res.summary
    print(f"{a.arch} on {a.dataset} ({device}): final test accuracy {s.final_test_accuracy:.4f}, "
          f"best {s.best_test_accuracy:.4f} (epoch {s.best_test_epoch}), status {s.status}, {s.seconds:.1f}s")


if __name__ == "__main__":
    main()
