"""Result stores for the benchmarks, in the layout ``lth run`` really produces, by the real writer.

A store of ``n`` campaigns is built the way a user grows one: ``n`` finished campaigns of
~1,000 trials each (``--seeds 32``: the quick campaign's 16 settings x 2 resets x 32 seeds =
1,024 cells, 1,152 units, 3 pruning levels, ``--epochs 25``), so 10 campaigns make a
10,240-trial store and 100 campaigns a 102,400-trial store.

* The first campaign (``bench-000``) is written exactly as ``lth run`` writes it, only without
  training (the rows are synthetic, deterministic and vary by seed, lr, reset and level so the
  report's verdicts are real statistics): ``register_campaign`` (``orchestrator/cli.py``:
  spec.yaml, spec.json, plan.json, plan-index.json), ``tables.create_tables``, the driver
  record, then unit by unit in plan order (dense, trajectories, branches) each unit stages
  its rows under the keys ``orchestrator/units.py`` uses (``Store.stage_records``: the dense
  run once, the trajectory and branch per level) and saves its final marker
  (``UnitMarker.save``); the driver's ``Committer`` commits every ``--batch`` units (each
  commit: one Delta commit per table, trials last, the ledger, staging deleted); at the end
  ``tables.compact`` (optimize + vacuum) of each table's campaign partition, as at the end of
  ``lth run``.
* Every further campaign ``bench-<i>`` gets its own ``register_campaign`` (its spec differs
  only in the name, so its plan has the same unit and trial ids), driver record, ledger
  (``committed.json``) and one final marker per unit (``UnitMarker.save``), and its rows are
  the first campaign's rows under the new campaign name, committed through ``tables.commit``
  (the same Delta commit, app transaction and writer properties the committer uses, so the
  data files are what ``lth run`` leaves): one commit per table and per batch of the first
  campaign (the same batches, so the partition holds the same per-batch files a run leaves
  before its compaction), then ``tables.compact`` of the partition. Staging and committing the
  rows again through a ``Committer`` would leave the same files ~10x slower.
* ``compact=False`` builds the variant before compaction: every campaign keeps its per-batch
  files (``lth run`` killed before its final compaction leaves this; a finished run never does).

Stores are cached under ``workdir/<variant>/<campaigns>/`` (``.complete`` marks a finished
build); a larger store is grown from a copy of the largest smaller cached one of the same
variant and parameters, as users grow theirs. The first campaign's per-batch rows are kept
in ``workdir/template-*/`` for the further campaigns.

    .venv/bin/python benchmarks/real_store.py --workdir /tmp/lth-real --campaigns 10 [--no-compact]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any directory

from orchestrator import paths, tables  # noqa: E402
from orchestrator.cli import register_campaign  # noqa: E402
from orchestrator.committer import COMMIT_ORDER, CommitLog, Committer, app_id  # noqa: E402
from orchestrator.ledger import UnitMarker, now  # noqa: E402
from orchestrator.plan import Plan, make_plan  # noqa: E402
from orchestrator.spec import Campaign, parse_campaign  # noqa: E402
from orchestrator.status import driver_finished, driver_started  # noqa: E402
from orchestrator.store import Store  # noqa: E402
from trainers.records import EpochMetrics, LevelSummary, MaskLayerStats  # noqa: E402

# campaigns/quick.yaml with more seeds and epochs (the demo campaign users start from)
SPEC = """
name: {name}
data: {{dataset: mnist1d}}
model: {{arch: mlp}}
train: {{optimizer: sgd, momentum: 0.9, weight_decay: 0.0001, batch_size: 128, epochs: {epochs}, schedule: cosine}}
prune: {{rate: 0.5, levels: {levels}, method: auto}}
seeds: {seeds}
resets: [rewind, reinit]
max_failures: 1
grid:
  arch: [mlp, lenet300_100]
  lr: [0.1, 0.01]
  schedule: [oneshot, iterative]
  structure: [unstructured, structured]
"""
LAYERS = {"mlp": (4000, 10000, 1000), "lenet300_100": (12000, 30000, 1000)}  # params per weight layer
CHANNEL_GROUPS = 2  # hidden layers: one "channel" row each for structured pruning


@dataclass(frozen=True)
class Params:
    seeds: int = 32
    epochs: int = 25
    levels: int = 3
    batch: int = 50  # units per commit of each campaign (lth run: whatever finished in >= 5 s)

    def key(self) -> str:
        return f"s{self.seeds}-e{self.epochs}-l{self.levels}-b{self.batch}"


def campaign_name(i: int) -> str:
    return f"bench-{i:03d}"


def make_campaign(name: str, p: Params) -> Campaign:
    return parse_campaign(SPEC.format(name=name, seeds=list(range(p.seeds)), epochs=p.epochs, levels=p.levels),
                          data_check=False)


# ----- the rows a unit writes -------------------------------------------------------------
def _rng(*key) -> random.Random:
    return random.Random(repr(key))


def _training(unit, level: int, reset: str, density: float, epochs: int) -> list:
    """EpochMetrics per (epoch, split) and the LevelSummary of one training, as trainers write them."""
    s = unit.setup
    rng = _rng(unit.unit_id, level, reset)
    # small lr: rewinding helps (Liu et al. Sec. 6); large lr: no difference
    gain = 0.02 if (s.train.lr < 0.05 and reset == "rewind" and s.prune.structure == "unstructured") else 0.0
    top = 0.62 + 0.04 * (s.model.arch == "mlp") - 0.03 * level * (s.prune.structure == "structured") + gain
    recs, best, best_epoch, iters = [], 0.0, 0, 32
    for e in range(epochs + 1):
        acc = {sp: top * (1 - 0.8 * 0.7 ** e) + rng.gauss(0, 0.01) for sp in ("train", "test")}
        acc["train"] += 0.05
        lr = s.train.lr * 0.5 * (1 + math.cos(math.pi * e / epochs))
        for split in ("train", "test"):
            recs.append(EpochMetrics(level=level, reset=reset, density=density, epoch=e, iteration=e * iters,
                                     split=split, loss=2.3 * (1 - acc[split]), accuracy=acc[split], lr=lr))
        if acc["test"] > best:
            best, best_epoch = acc["test"], e
    final = recs[-1].accuracy
    recs.append(LevelSummary(level=level, reset=reset, density=density, status="done", final_test_accuracy=final,
                             best_test_accuracy=best, best_test_epoch=best_epoch, val_selected_test_accuracy=None,
                             early_stop_iteration=None, final_train_loss=recs[-2].loss, epochs=epochs,
                             iterations=epochs * iters, seconds=rng.uniform(5, 15), best_test_loss=2.3 * (1 - best),
                             final_test_loss=2.3 * (1 - final)))
    return recs


def _mask_stats(unit, level: int, density: float) -> list:
    s = unit.setup
    rng = _rng(unit.unit_id, level, "mask")
    out = []
    for i, params in enumerate(LAYERS[s.model.arch]):
        kept = int(params * density)
        out.append(MaskLayerStats(level=level, layer=f"layers.{i}.weight", kind="weight", params=params, kept=kept,
                                  density=kept / params, jaccard_prev=None if level == 1 else rng.uniform(0.4, 0.6),
                                  travel_kept=rng.uniform(0.02, 0.05), travel_pruned=rng.uniform(0.005, 0.02),
                                  bn_negative_bias_fraction=None, sign_agreement_kept=rng.uniform(0.8, 0.95),
                                  travel_kept_null=rng.uniform(0.01, 0.03)))
    if s.prune.structure == "structured":
        for i in range(CHANNEL_GROUPS):
            out.append(MaskLayerStats(level=level, layer=f"layers.{i}", kind="channel", params=100,
                                      kept=int(100 * density), density=density, jaccard_prev=None, travel_kept=None,
                                      travel_pruned=None, bn_negative_bias_fraction=None, sign_agreement_kept=None))
    return out


def unit_writes(unit, p: Params) -> list[tuple[str, tuple[str, ...], list]]:
    """(key, trial ids, records) per ``Store.stage_records`` call of ``unit``, in the order and under
    the keys ``orchestrator/units.py`` stages them: the dense run under the unit id; per level of a
    trajectory its driver's training (cells it serves) and the mask statistics (every cell of
    the trajectory); per level of a branch its training."""
    uid = unit.unit_id
    if unit.stage == "dense":
        return [(uid, unit.serves, _training(unit, 0, "dense", 1.0, p.epochs))]
    out = []
    for level in range(1, p.levels + 1):
        density = unit.setup.prune.rate ** level
        key = f"{uid}-L{level}"
        if unit.serves:
            out.append((key, unit.serves, _training(unit, level, unit.reset, density, p.epochs)))
        if unit.stage == "trajectory":
            out.append((key, unit.mask_serves, _mask_stats(unit, level, density)))
    return out


def final_marker(unit, p: Params) -> UnitMarker:
    return UnitMarker(unit.unit_id, stage=unit.stage, status="done", attempts=1,
                      levels_done=0 if unit.stage == "dense" else p.levels, host="bench", device="cpu",
                      threads=1, started_at=now(), finished_at=now(), seconds=10.0)


def plan_units(plan: Plan) -> list:
    return [u for stage in ("dense", "trajectory", "branch") for u in plan.stage(stage)]


# ----- building ----------------------------------------------------------------------------
@dataclass
class Build:
    root: Path
    campaigns: int
    trials: int
    seconds: float  # this build (growing from a cached store: only the added campaigns)
    first_campaign_seconds: float | None = None


def _register(store: Store, name: str, p: Params) -> Plan:
    campaign = make_campaign(name, p)
    plan = make_plan(campaign)
    register_campaign(store, campaign, plan)
    return plan


def build_first(store: Store, p: Params, *, compact: bool, template: Path | None = None) -> float:
    """Campaign ``bench-000`` through the real write path (module docstring); returns seconds.
    Its per-batch rows (one file per commit and table) are saved under ``template``."""
    t0 = time.perf_counter()
    name = campaign_name(0)
    plan = _register(store, name, p)
    tables.create_tables(store)
    driver = driver_started(store, name)
    committer = Committer(store, plan)
    for i, u in enumerate(plan_units(plan)):
        for key, serves, recs in unit_writes(u, p):
            store.stage_records(name, key, u.unit_id, serves, recs)
        final_marker(u, p).save(store, name)
        if (i + 1) % p.batch == 0:
            committer.commit()
    committer.commit()
    driver_finished(store, name, driver, "completed")
    if template is not None:
        _save_template(store, name, template)
    if compact:
        for t in COMMIT_ORDER:
            tables.compact(store, t, name)
    return time.perf_counter() - t0


def _save_template(store: Store, name: str, template: Path) -> None:
    """The campaign's data files saved as ``template/<table>/<batch>.parquet``: each table's file
    of each commit, by the batch number of the commit's application transaction (read from the
    table's ``_delta_log``)."""
    tmp = template.with_name(template.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for t in COMMIT_ORDER:
        log_dir = Path(store.full(f"{paths.table_dir(t)}/{tables.DELTA_LOG}"))
        for entry in sorted(log_dir.glob("*.json")):
            actions = [json.loads(line) for line in entry.read_text().splitlines() if line.strip()]
            batch = next((a["txn"]["version"] for a in actions if "txn" in a and a["txn"]["appId"] == app_id(name)), None)
            adds = [a["add"]["path"] for a in actions if "add" in a]
            if batch is None or not adds:
                continue
            if len(adds) != 1:
                raise RuntimeError(f"{t}: commit {entry.name} added {len(adds)} files (expected one per batch)")
            (tmp / t).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(store.full(f"{paths.table_dir(t)}/{urllib.parse.unquote(adds[0])}"),
                            tmp / t / f"{batch:04d}.parquet")
    shutil.copyfile(store.full(paths.committed(name)), tmp / "committed.json")
    tmp.rename(template)


def add_campaign(store: Store, i: int, p: Params, template: Path, *, compact: bool) -> None:
    """Campaign ``bench-<i>``: the first campaign's rows under this name (module docstring)."""
    name = campaign_name(i)
    plan = _register(store, name, p)
    driver = driver_started(store, name)
    for u in plan_units(plan):
        final_marker(u, p).save(store, name)
    batches = {t: {int(f.stem): f for f in (template / t).glob("*.parquet")} for t in COMMIT_ORDER}
    for b in sorted({b for files in batches.values() for b in files}):
        for t in COMMIT_ORDER:  # trials last, as the committer does
            if b in batches[t]:
                data = pq.read_table(batches[t][b], partitioning=None)
                data = data.append_column("campaign", pa.array([name] * data.num_rows, pa.string()))
                tables.commit(store, t, data, app_id=app_id(name), version=b)
    log = CommitLog(**json.loads((template / "committed.json").read_text()))
    log.save(store, name)
    driver_finished(store, name, driver, "completed")
    if compact:
        for t in COMMIT_ORDER:
            tables.compact(store, t, name)


def trials_per_campaign(p: Params) -> int:
    return len(make_plan(make_campaign(campaign_name(0), p)).cells)


def build(workdir: str | Path, campaigns: int, p: Params = Params(), *, compact: bool = True,
          log=print) -> Build:
    """The store of ``campaigns`` campaigns (cached; see the module docstring)."""
    work = Path(workdir).resolve()
    variant = work / f"{'compacted' if compact else 'uncompacted'}-{p.key()}"
    root = variant / str(campaigns)
    per = trials_per_campaign(p)
    if (root / ".complete").exists():
        info = json.loads((root / ".complete").read_text())
        return Build(root, campaigns, per * campaigns, info["seconds"], info.get("first_campaign_seconds"))
    template = work / f"template-{p.key()}"
    cached = sorted((int(d.name) for d in variant.glob("*") if d.name.isdigit() and (d / ".complete").exists()
                     and int(d.name) < campaigns), reverse=True)
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    first = None
    if cached:
        shutil.copytree(variant / str(cached[0]), root)
        (root / ".complete").unlink()
        start = cached[0]
        log(f"growing {variant.name}/{cached[0]} -> {campaigns} campaigns")
    else:
        root.mkdir(parents=True)
        first = build_first(Store(str(root)), p, compact=compact, template=None if template.exists() else template)
        start = 1
        log(f"{campaign_name(0)}: {per} trials through stage -> Committer (every {p.batch} units) "
            f"{'-> compact ' if compact else ''}in {first:.1f} s")
    store = Store(str(root))
    for i in range(start, campaigns):
        t1 = time.perf_counter()
        add_campaign(store, i, p, template, compact=compact)
        if i in (start, campaigns - 1) or i % 10 == 0:
            log(f"{campaign_name(i)}: {time.perf_counter() - t1:.1f} s")
    seconds = time.perf_counter() - t0
    (root / ".complete").write_text(json.dumps({**asdict(p), "campaigns": campaigns, "compact": compact,
                                                "seconds": seconds, "first_campaign_seconds": first}))
    return Build(root, campaigns, per * campaigns, seconds, first)


def data_files(root: Path) -> int:
    store = Store(str(root))
    return sum(len(tables.live_files(store, t)) for t in COMMIT_ORDER)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--campaigns", type=int, default=10)
    ap.add_argument("--no-compact", action="store_true", help="the variant before compaction")
    ap.add_argument("--seeds", type=int, default=Params.seeds)
    ap.add_argument("--epochs", type=int, default=Params.epochs)
    ap.add_argument("--batch", type=int, default=Params.batch)
    args = ap.parse_args()
    p = Params(seeds=args.seeds, epochs=args.epochs, batch=args.batch)
    b = build(args.workdir, args.campaigns, p, compact=not args.no_compact)
    print(f"{b.root}: {b.campaigns} campaigns, {b.trials:,} trials, {data_files(b.root)} data files, "
          f"built in {b.seconds:.0f} s")


if __name__ == "__main__":
    main()
