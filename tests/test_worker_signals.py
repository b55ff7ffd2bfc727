"""The SIGTERM handler Ray workers get (orchestrator/worker_signals.py), driven by a real
training in a second thread, as in a Ray worker where Tune runs the trainable off the main thread."""

from __future__ import annotations

import threading
import time

from orchestrator import worker_signals
from trainers import preemption
from trainers.checkpoint import Checkpointer
from trainers.config import DataConfig, ModelConfig, TrainConfig
from trainers.datasets import load_data
from trainers.models import build_model
from trainers.preemption import Preempted
from trainers.training import train


def test_without_a_running_training_the_wrapped_handler_runs_at_once():
    preemption.clear()
    calls = []
    t = time.monotonic()
    worker_signals.checkpoint_first(lambda s, f: calls.append(s))(15, None)
    assert calls == [15] and time.monotonic() - t < 1.0
    assert not preemption.requested()  # nothing to ask of: no request left behind


def test_a_running_training_checkpoints_before_the_wrapped_handler_runs():
    preemption.clear()
    data = load_data(DataConfig("digits", val_size=0), 0, "cpu")
    model = build_model(ModelConfig("mlp", {"widths": [32]}), data.input_shape, data.num_classes, 0)
    saved, outcome = [], {}
    checkpointer = Checkpointer(save=saved.append, every_epochs=None, every_minutes=None)
    started = threading.Event()

    def run():
        with preemption.checkpointing_training():
            started.set()
            try:
                train(model, data, TrainConfig(lr=0.05, epochs=500, batch_size=32, schedule="constant"),
                      device="cpu", seed=0, checkpointer=checkpointer)
                outcome["result"] = "finished"
            except Preempted as e:
                outcome["result"] = e

    worker = threading.Thread(target=run)
    worker.start()
    started.wait(30)
    time.sleep(0.5)  # into the training
    calls = []

    def ray_handler(signum, frame):  # what Ray's own handler does: end the worker (here: note when)
        calls.append((signum, len(saved)))

    t = time.monotonic()
    worker_signals.checkpoint_first(ray_handler)(15, None)
    waited = time.monotonic() - t
    worker.join(60)
    preemption.clear()
    assert isinstance(outcome.get("result"), Preempted), outcome  # stopped at the end of a batch
    assert len(saved) == 1 and saved[0].iteration == outcome["result"].iteration > 0
    assert calls == [(15, 1)]  # Ray's handler ran only after the checkpoint was saved ...
    assert waited < worker_signals.GRACE_S / 2  # ... as soon as it was (not at the end of the grace period)
