"""Graceful preemption with a real process: ``python -m trainers --checkpoint`` sent SIGTERM writes a
checkpoint at once and exits 143; the same command resumes from it and ends bit-identical to an
uninterrupted run (weights and every record), and removes the checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch

from trainers.checkpoint import load_file

EPOCHS = 60
ARGS = ["--dataset", "digits", "--arch", "mlp", "--model-options", '{"widths": [32]}', "--optimizer", "sgd",
        "--lr", "0.05", "--schedule", "step", "--epochs", str(EPOCHS), "--batch-size", "128", "--val-size", "200",
        "--seed", "2", "--device", "cpu", "--threads", "1", "--quiet"]


def _cmd(tmp, name, *extra):
    return [sys.executable, "-m", "trainers", *ARGS, "--save-weights", str(tmp / f"{name}.pt"),
            "--records", str(tmp / f"{name}.jsonl"), *extra]


def _records(path):
    # every field but wall-clock seconds (json keeps floats exactly: repr round-trips)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_sigterm_writes_a_checkpoint_then_the_rerun_resumes_it_bit_identically(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = subprocess.run(_cmd(tmp_path, "ref"), env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr

    ckpt = tmp_path / "run.ckpt"
    extra = ("--checkpoint", str(ckpt), "--checkpoint-every-epochs", "1")
    proc = subprocess.Popen(_cmd(tmp_path, "run", *extra), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the training ended before it could be preempted"
    first = load_file(ckpt)  # the periodic checkpoint of epoch 1 (written atomically: readable as soon as it exists)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert "preempted: checkpoint written at iteration" in out
    at_term = load_file(ckpt)
    total = _records(tmp_path / "ref.jsonl")[-1]["iterations"]
    # the file seen first is a periodic (epoch-boundary) checkpoint: that of epoch 1, or of a later epoch
    # when the next one replaced it before it was read; the SIGTERM one is later, before the end
    per_epoch = total // EPOCHS
    assert first.iteration % per_epoch == 0 and per_epoch <= first.iteration <= at_term.iteration < total

    resumed = subprocess.run(_cmd(tmp_path, "run", *extra), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {ckpt} at iteration {at_term.iteration}" in resumed.stdout
    assert not ckpt.exists()  # finished: the checkpoint is removed
    a, b = torch.load(tmp_path / "ref.pt"), torch.load(tmp_path / "run.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref_records, run_records = _records(tmp_path / "ref.jsonl"), _records(tmp_path / "run.jsonl")
    assert len(ref_records) == EPOCHS * 3 + 1 and run_records == ref_records  # no record lost or duplicated
