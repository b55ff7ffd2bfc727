"""``python -m trainers --dataset mnist1d --arch mlp``: one short training run, accuracy printed."""

from __future__ import annotations

import argparse
import json

from trainers.config import DataConfig, ModelConfig, TrainConfig
from trainers.datasets import load_data
from trainers.device import pick_device
from trainers.models import build_model
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
    a = p.parse_args(argv)

    device = pick_device(a.device)
    data = load_data(DataConfig(a.dataset, root=a.root, val_size=a.val_size, options=json.loads(a.data_options)),
                     a.seed, device)
    model = build_model(ModelConfig(a.arch, options=json.loads(a.model_options)), data.input_shape,
                        data.num_classes, a.seed)
    cfg = TrainConfig(optimizer=a.optimizer, lr=a.lr, epochs=a.epochs, batch_size=a.batch_size,
                      weight_decay=a.weight_decay, schedule=a.schedule)

    def show(r) -> None:
        if isinstance(r, EpochMetrics) and r.split == "test" and not a.quiet:
            print(f"epoch {r.epoch:3d}  iter {r.iteration:6d}  lr {r.lr:.4g}  test loss {r.loss:.4f}  acc {r.accuracy:.4f}")

    s = train(model, data, cfg, device=device, seed=a.seed, on_record=show).summary
    print(f"{a.arch} on {a.dataset} ({device}): final test accuracy {s.final_test_accuracy:.4f}, "
          f"best {s.best_test_accuracy:.4f} (epoch {s.best_test_epoch}), status {s.status}, {s.seconds:.1f}s")


if __name__ == "__main__":
    main()
