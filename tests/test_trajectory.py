"""The pruning trajectory end to end on scikit-learn's bundled digits (real data, real models,
real training loop): records, densities, nesting, exact zeros, resets, determinism, resume."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.config import DataConfig, ModelConfig, PruneConfig, RunSetup, TrainConfig
from trainers.records import LevelSummary, MaskLayerStats
from trainers.resets import parse_reset
from trainers.trajectory import (
    DenseState,
    TrajectoryState,
    level_masks,
    retrain,
    run_trajectory,
    train_dense,
)

RESETS = ["rewind", "reinit", "rewind@5", "finetune", "lr_rewind"]


def setup_(schedule="iterative", structure="unstructured", method="magnitude_global", levels=2, rate=0.3):
    return RunSetup(
        data=DataConfig("digits"),
        model=ModelConfig("mlp", {"widths": (32, 16)}),
        train=TrainConfig(lr=0.05, epochs=2, batch_size=128, milestones=(1,)),
        prune=PruneConfig(structure=structure, method=method, schedule=schedule, rate=rate, levels=levels),
        seed=3,
    )


@pytest.fixture(scope="module")
def full_run():
    records = []
    states = []
    res = run_trajectory(setup_(), RESETS, device="cpu", on_record=records.append, on_level_done=states.append)
    return res, records, states


def test_records_densities_and_nesting(full_run):
    res, records, _ = full_run
    summaries = [r for r in records if isinstance(r, LevelSummary)]
    assert [(s.level, s.reset) for s in summaries] == [(0, "dense")] + [(lv, r) for lv in (1, 2) for r in RESETS]
    stats = [r for r in records if isinstance(r, MaskLayerStats) and r.kind == "weight"]  # (channel rows: test_stats)
    model_layers = 3  # hidden.0, hidden.1, out
    assert [s.level for s in stats] == [1] * model_layers + [2] * model_layers  # once per level, not per reset
    total = sum(s.params for s in stats if s.level == 1)
    kept1 = total - round(0.3 * total)
    kept2 = kept1 - round(0.3 * kept1)
    assert sum(s.kept for s in stats if s.level == 1) == kept1
    assert sum(s.kept for s in stats if s.level == 2) == kept2
    for s in summaries[1:]:
        assert s.density == (kept1 if s.level == 1 else kept2) / total
    assert all(s.jaccard_prev is None for s in stats if s.level == 1)
    m1, m2 = res.masks[1], res.masks[2]
    assert all(not bool((m2[k] & ~m1[k]).any()) for k in m1)  # nested


def test_rewind_starts_from_init_and_rewind_at_k_resumes(full_run):
    res, records, _ = full_run
    dense = res.dense
    assert sorted(dense.rewind_points) == [5]
    by = {(s.level, s.reset): s for s in res.summaries}
    assert by[(1, "rewind@5")].iterations == by[(1, "rewind")].iterations == dense.summary.iterations
    # rewind@5 does 5 fewer optimizer steps; the first epoch row shows it
    first = {r.reset: r for r in records if getattr(r, "split", None) == "test" and r.level == 1 and r.epoch == 1}
    assert first["rewind@5"].iteration == first["rewind"].iteration


def test_pruned_weights_exactly_zero_and_reinit_differs():
    s = setup_(levels=1)
    dense = train_dense(s, device="cpu", on_record=None)
    mask = level_masks(s, dense, 1, None, None)
    out = {r: retrain(s, level=1, mask=mask, reset=r, dense=dense, source=dense.final, device="cpu", on_record=None)
           for r in ("rewind", "reinit", "finetune")}
    for br in out.values():
        for k, m in mask.items():
            assert bool((br.weights[k][~m] == 0).all())
    assert not torch.equal(out["rewind"].weights["hidden.0.weight"], out["reinit"].weights["hidden.0.weight"])
    # finetune starts from the trained weights at a small lr: it ends nearer to them than rewind does
    def dist(br):
        return sum(float((br.weights[k] - dense.final[k] * m).norm()) for k, m in mask.items())
    assert dist(out["finetune"]) < dist(out["rewind"])


def test_same_seed_bit_identical(full_run):
    res, _, _ = full_run
    again = run_trajectory(setup_(), ["rewind", "reinit"], device="cpu", on_record=None, dense=res.dense)
    first = {(s.level, s.reset): s for s in res.summaries}
    for s in again.summaries:
        ref = first[(s.level, s.reset)]
        assert (s.final_test_accuracy, s.final_train_loss) == (ref.final_test_accuracy, ref.final_train_loss)
    for lv in (1, 2):
        assert all(torch.equal(again.masks[lv][k], res.masks[lv][k]) for k in res.masks[lv])


def test_resume_after_level_one_reproduces_level_two(full_run):
    res, _, states = full_run
    buf = io.BytesIO()
    torch.save(states[0].to_state(), buf)  # what the orchestrator does: plain tensors only
    buf.seek(0)
    state = TrajectoryState.from_state(torch.load(buf, weights_only=True))
    buf = io.BytesIO()
    torch.save(res.dense.to_state(), buf)
    buf.seek(0)
    dense = DenseState.from_state(torch.load(buf, weights_only=True))
    records = []
    resumed = run_trajectory(setup_(), RESETS, device="cpu", on_record=records.append, dense=dense, resume=state)
    assert {s.level for s in resumed.summaries} == {2}
    assert all(torch.equal(resumed.masks[2][k], res.masks[2][k]) for k in res.masks[2])
    ref = {(s.level, s.reset): s.final_test_accuracy for s in res.summaries}
    assert {(s.level, s.reset): s.final_test_accuracy for s in resumed.summaries} == {
        k: v for k, v in ref.items() if k[0] == 2}


def test_oneshot_structured_levels():
    s = setup_(schedule="oneshot", structure="structured", method="l1_structured", levels=2, rate=0.5)
    res = run_trajectory(s, ["rewind"], device="cpu", on_record=None)
    for lv in (1, 2):
        rows = res.masks[lv]["hidden.0.weight"].any(1)
        assert int(rows.sum()) == 32 - round((1 - 0.5**lv) * 32)  # straight from dense to (1-rate)^k


def test_bad_resets_and_missing_rewind_point():
    with pytest.raises(ValueError, match="unknown mode 'bogus'"):
        parse_reset("bogus")
    with pytest.raises(ValueError, match="only"):
        parse_reset("reinit@3")
    with pytest.raises(ValueError, match="non-negative integer"):
        parse_reset("rewind@x")
    s = setup_(levels=1)
    dense = train_dense(s, device="cpu")
    mask = level_masks(s, dense, 1, None, None)
    with pytest.raises(ValueError, match="iteration 7"):
        retrain(s, level=1, mask=mask, reset="rewind@7", dense=dense, source=dense.final, device="cpu",
                on_record=None)


@settings(max_examples=4, deadline=None)
@given(rate=st.floats(0.2, 0.8), method=st.sampled_from(["magnitude_global", "random_unstructured", "l1_structured"]))
def test_property_pruned_weights_stay_zero_after_training(rate, method):
    structure = "structured" if method == "l1_structured" else "unstructured"
    s = RunSetup(DataConfig("digits"), ModelConfig("mlp", {"widths": (16,)}),
                 TrainConfig(lr=0.1, epochs=None, iterations=6, batch_size=64, momentum=0.9),
                 PruneConfig(structure=structure, method=method, rate=rate, levels=1), seed=0)
    dense = train_dense(s, device="cpu")
    mask = level_masks(s, dense, 1, None, None)
    br = retrain(s, level=1, mask=mask, reset="lr_rewind", dense=dense, source=dense.final, device="cpu",
                 on_record=None)
    for k, m in mask.items():
        assert bool((br.weights[k][~m] == 0).all()), k
