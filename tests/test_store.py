"""The result store on real files: atomic writes, overwrite-not-duplicate, schema checks, scan integrity."""

from __future__ import annotations

import datetime as dt
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from orchestrator import schema
from orchestrator.store import TMP_PREFIX, Store, StoreError
from trainers.records import EpochMetrics, LevelSummary, MaskLayerStats


def trial_row(trial_id: str, **over) -> dict:
    row = dict(
        trial_id=trial_id, dataset="digits", arch="mlp", lr=0.1, schedule="iterative", reset="rewind",
        structure="unstructured", seed=0, axes_json="{}", config_json="{}", status="done", reason=None,
        attempts=1, host="h", device="cpu", units_json="[]",
        started_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC), finished_at=None, seconds=1.5,
    )
    row.update(over)
    return row


def records() -> list:
    return [
        EpochMetrics(level=1, reset="rewind", density=0.8, epoch=e, iteration=10 * e, split="test",
                     loss=1.0 / (e + 1), accuracy=0.5 + 0.1 * e, lr=0.1)
        for e in range(3)
    ] + [
        LevelSummary(level=1, reset="rewind", density=0.8, status="done", final_test_accuracy=0.7,
                     best_test_accuracy=0.7, best_test_epoch=2, val_selected_test_accuracy=None,
                     early_stop_iteration=20, final_train_loss=0.3, epochs=2, iterations=20, seconds=0.1),
        MaskLayerStats(level=1, layer="fc.weight", kind="weight", params=100, kept=80, density=0.8,
                       jaccard_prev=None, travel_kept=0.2, travel_pruned=0.05,
                       bn_negative_bias_fraction=None, sign_agreement_kept=0.9),
    ]


def test_write_table_roundtrip_and_overwrite(tmp_path):
    store = Store(tmp_path / "s")
    assert store.root == str(tmp_path / "s")
    path = store.write_table("trials", "c1", "u1", [trial_row("t1"), trial_row("t2", seed=1)])
    assert path == "trials/campaign=c1/u1.parquet"
    meta = pq.read_metadata(os.path.join(store.root, path)).metadata
    assert schema.file_version(meta) == schema.SCHEMA_VERSION
    assert "campaign" not in pq.read_schema(os.path.join(store.root, path)).names
    # Same key again (a retried unit) replaces the file: rows never duplicate.
    store.write_table("trials", "c1", "u1", [trial_row("t1"), trial_row("t2", seed=1)])
    t = store.read_table("trials")
    assert t.num_rows == 2 and set(t.column("campaign").to_pylist()) == {"c1"}
    assert store.list("trials") == ["trials/campaign=c1/u1.parquet"]  # no temp files left behind
    assert store.campaigns() == ["c1"]


def test_write_records_fans_out_to_trials(tmp_path):
    store = Store(tmp_path)
    store.write_records("c", "dense-u", "dense-u", ["a", "b"], records())
    metrics = store.read_table("metrics").to_pylist()
    assert len(metrics) == 6  # 3 epochs x 2 trials
    assert {m["trial_id"] for m in metrics} == {"a", "b"} and {m["unit_id"] for m in metrics} == {"dense-u"}
    assert store.read_table("levels").num_rows == 2 and store.read_table("masks").num_rows == 2
    assert sorted(store.list("")) == sorted(f"{t}/campaign=c/dense-u.parquet" for t in ("metrics", "levels", "masks"))
    with pytest.raises(StoreError, match="trial_ids"):
        store.write_records("c", "k", "u", "a", records())


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{**trial_row("t"), "bogus": 1}], r"unknown column\(s\) \['bogus'\]"),
        ([{k: v for k, v in trial_row("t").items() if k != "arch"}], "required column 'arch'"),
        ([trial_row("t", lr="fast")], "column 'lr'"),
        ([trial_row("t", seed=None)], "column 'seed'.*null"),
    ],
)
def test_write_table_rejects_bad_rows_naming_column(tmp_path, rows, message):
    store = Store(tmp_path)
    with pytest.raises(StoreError, match=message):
        store.write_table("trials", "c", "k", rows)
    assert store.list("") == []


def test_write_table_casts_arrow_and_checks_names(tmp_path):
    store = Store(tmp_path)
    # int32 seeds and a missing nullable column cast safely
    t = pa.Table.from_pylist([trial_row("t")]).drop_columns(["host"])
    t = t.set_column(t.schema.get_field_index("seed"), "seed", pa.array([3], pa.int32()))
    store.write_table("trials", "c", "k", t)
    row = store.read_table("trials").to_pylist()[0]
    assert row["seed"] == 3 and row["host"] is None
    with pytest.raises(StoreError, match="unknown table 'trial'"):
        store.write_table("trial", "c", "k", [])
    with pytest.raises(StoreError, match="campaign name"):
        store.write_table("trials", "../x", "k", [])
    with pytest.raises(StoreError, match="file key"):
        store.write_table("trials", "c", "a/b", [])


def test_scan_lists_bad_files(tmp_path):
    store = Store(tmp_path)
    store.write_records("c", "good", "u", ["t"], records())
    good = "metrics/campaign=c/good.parquet"
    d = os.path.join(store.root, "metrics", "campaign=c")
    data = open(os.path.join(store.root, good), "rb").read()
    open(os.path.join(d, "truncated.parquet"), "wb").write(data[: len(data) // 2])
    open(os.path.join(d, "notes.parquet"), "w").write("not parquet at all")
    open(os.path.join(d, "readme.txt"), "w").write("hello")
    open(os.path.join(d, f"{TMP_PREFIX}abc-half.parquet"), "wb").write(data)
    old = pq.read_table(os.path.join(store.root, good))
    pq.write_table(old.replace_schema_metadata({schema.METADATA_KEY: b"999"}), os.path.join(d, "future.parquet"))
    scan = store.scan("metrics")
    assert [os.path.basename(f) for f in scan.files] == ["good.parquet"]
    reasons = {os.path.basename(b.path): b.reason for b in scan.bad}
    assert set(reasons) == {"truncated.parquet", "notes.parquet", "readme.txt", f"{TMP_PREFIX}abc-half.parquet",
                            "future.parquet"}
    assert "footer" in reasons["truncated.parquet"] and "footer" in reasons["notes.parquet"]
    assert "version 999" in reasons["future.parquet"]
    assert "temporary" in reasons[f"{TMP_PREFIX}abc-half.parquet"]
    with pytest.warns(UserWarning, match="truncated.parquet"):
        assert store.read_table("metrics").num_rows == 3
    assert store.scan("metrics", "other").files == []


def test_json_text_tensor_artifacts(tmp_path):
    store = Store(str(tmp_path / "root"))
    assert store.get_json("_units/campaign=c/u.json") is None and not store.exists("_units/campaign=c/u.json")
    store.put_json("_units/campaign=c/u.json", {"status": "done", "n": 2})
    assert store.get_json("_units/campaign=c/u.json") == {"status": "done", "n": 2}
    assert json.loads(store.get_text("_units/campaign=c/u.json"))["n"] == 2
    store.put_text("_campaigns/c/spec.yaml", "a: 1\n")
    assert store.get_text("_campaigns/c/spec.yaml") == "a: 1\n"
    assert store.campaigns() == ["c"]
    w = {"fc.weight": torch.arange(6.0).reshape(2, 3), "mask": torch.ones(3, dtype=torch.bool)}
    store.put_tensors("_artifacts/u/final.pt", w)
    back = store.get_tensors("_artifacts/u/final.pt")
    assert torch.equal(back["fc.weight"], w["fc.weight"]) and back["mask"].dtype == torch.bool
    assert store.list("_artifacts") == ["_artifacts/u/final.pt"]
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        store.get_tensors("_artifacts/u/missing.pt")
    with pytest.raises(StoreError, match="'..'"):
        store.put_text("../escape.txt", "x")


def test_uri_store(tmp_path):
    store = Store(f"file://{tmp_path}/u")
    store.write_table("trials", "c", "k", [trial_row("t")])
    assert store.read_table("trials", "c").num_rows == 1 and store.root == f"{tmp_path}/u"
