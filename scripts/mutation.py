"""Planted-mutant testing of the science and the plan: does a small surgical bug fail a test?

Each mutant is one (or a few coupled) exact text replacements in one source file, the kind of
bug that silently corrupts results (rewind from the wrong weights, best = final, a branch
computing its own masks, a unit key losing a setting, a statistic off by a ddof...). The
script copies the repository's committed files (``git archive <rev>``) to a temp directory,
never touching the working tree, plants one mutant at a time there, runs the mutant's related
test files (``-x``: the first failure kills it) and prints caught / survived per mutant.

    python scripts/mutation.py                       # every mutant, tests at the same revision
    python scripts/mutation.py --tests-rev 4be05d6   # tests of an older revision ("before")
    python scripts/mutation.py --only rewind_k_uses_theta0,best_is_final
    python scripts/mutation.py --list

Tests failing on the unmutated copy are deselected for that run (and named), so an old
revision's tests that no longer fit today's sources (or a test broken at HEAD) do not count as kills. Related tests are
files that run without Ray (the run stays within minutes per mutant on 2 cores).

Why planted mutants and mutmut side by side: mutmut 3 (dev extra) mutates every operator of
every line and works on this layout (``--mutmut MODULES`` runs it in a temp copy), but only where
the related tests take seconds: orchestrator/plan.py alone (234 lines) gives 300 mutants, and
trainers/ + analysis/ are ~4,000 lines whose torch-based tests take tens of seconds per mutant,
days on this machine's 2 shared cores. So ``--mutmut`` covers orchestrator/plan.py, analysis/tables.py, analysis/paired_tests.py, trainers/stats.py and
trainers/resets.py, and the planted list below covers the training, pruning, trajectory, unit and
statistics code with the bugs that matter, reviewed one by one (docs/mutation.md).
``tests/test_mutation_list.py`` checks in the default run that every planted mutant still
applies to the current sources.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    edits: tuple[tuple[str, str], ...]  # (old text, exactly once in the file; new text)
    tests: tuple[str, ...]  # related test files (or file::test ids), oldest first; run newest first
    what: str
    extra: tuple[str, ...] = field(default=())  # extra pytest arguments (e.g. -k)


def m(name, file, old, new, tests, what, extra=()):
    return Mutant(name, file, ((old, new),), tuple(tests), what, tuple(extra))


# Related test files per area (old ones first: a kill by them shows in the "before" run too).
T_RESETS = ("tests/test_trajectory.py", "tests/test_science_resets.py")
T_SELECT = ("tests/test_training.py", "tests/test_science_selection.py")
T_TRAIN = ("tests/test_training.py",)
T_PRUNE = ("tests/test_pruning.py", "tests/test_trajectory.py", "tests/test_science_branches.py")
T_BRANCH = ("tests/test_trajectory.py", "tests/test_science_branches.py")
T_STATS = ("tests/test_stats.py", "tests/test_trajectory.py", "tests/test_science_branches.py")
T_PLAN = ("tests/test_plan.py", "tests/test_unit_keys.py")
T_ANALYSIS = ("tests/test_analysis_rethinking.py", "tests/test_report_fast.py", "tests/test_science_tables.py")
T_TABLES = ("tests/test_analysis_rethinking.py", "tests/test_report_fast.py", "tests/test_science_tables.py")
T_SQL = ("tests/test_analysis_views.py",)

MUTANTS: list[Mutant] = [
    # --- resets: where retraining starts -------------------------------------------------------
    m("rewind_other_seed", "trainers/resets.py",
      "        return ResetStart(_copy(dense.init))",
      "        from trainers.models import build_model\n"
      "        return ResetStart(build_model(setup.model, tuple(dense.input_shape), dense.num_classes,"
      " setup.seed + 1).state_dict())",
      T_RESETS, "rewind starts from theta_0 of another seed"),
    m("rewind_k_uses_theta0", "trainers/resets.py",
      "return ResetStart(_copy(dense.rewind_points[spec.k]), start_iteration=spec.k)",
      "return ResetStart(_copy(dense.init), start_iteration=spec.k)",
      T_RESETS, "rewind@k starts from theta_0 instead of the iteration-k snapshot"),
    m("rewind_k_restarts_schedule", "trainers/resets.py",
      "return ResetStart(_copy(dense.rewind_points[spec.k]), start_iteration=spec.k)",
      "return ResetStart(_copy(dense.rewind_points[spec.k]), start_iteration=0)",
      T_RESETS, "rewind@k replays the schedule and data order from iteration 0"),
    m("reinit_is_theta0", "trainers/resets.py",
      'seed = derive_seed(setup.seed, level, "reinit")', "seed = setup.seed",
      T_RESETS, "reinit draws theta_0 again (the control becomes the ticket)"),
    m("reinit_same_every_level", "trainers/resets.py",
      'seed = derive_seed(setup.seed, level, "reinit")', 'seed = derive_seed(setup.seed, 0, "reinit")',
      T_RESETS, "reinit draws the same fresh init at every level"),
    m("finetune_from_init", "trainers/resets.py",
      "return ResetStart(_copy(source), lr_override=lr)", "return ResetStart(_copy(dense.init), lr_override=lr)",
      T_RESETS, "finetune starts from theta_0 instead of the trained weights"),
    m("finetune_default_lr", "trainers/resets.py",
      "else setup.train.lr / 10", "else setup.train.lr",
      T_RESETS, "finetune's default lr is the training lr, not lr/10"),
    m("lr_rewind_from_init", "trainers/resets.py",
      "    return ResetStart(_copy(source))\n", "    return ResetStart(_copy(dense.init))\n",
      T_RESETS, "lr_rewind starts from theta_0 (it becomes rewind)"),
    # --- retrain / trajectory bookkeeping --------------------------------------------------------
    m("retrain_ignores_start_iteration", "trainers/trajectory.py",
      "start_iteration=start.start_iteration", "start_iteration=0",
      T_RESETS, "retrain ignores the reset's start iteration"),
    m("retrain_ignores_lr_override", "trainers/trajectory.py",
      "    if start.lr_override is not None:", "    if False:",
      T_RESETS, "finetune trains at the configured schedule"),
    m("iterative_masks_from_dense", "trainers/trajectory.py",
      '    if setup.prune.schedule == "oneshot" or source is None:', "    if True:",
      T_BRANCH, "iterative masks ranked on the dense weights, not the driver's"),
    m("driver_weights_dropped", "trainers/trajectory.py",
      "        prev_mask, source = mask, driver_res.weights", "        prev_mask, source = mask, source",
      T_BRANCH, "the next level is ranked on the previous source, not the driver's new weights"),
    m("stats_without_previous_mask", "trainers/trajectory.py",
      "mask_statistics(model, level, mask, prev_mask if iterative else None, dense.init, stats_from)",
      "mask_statistics(model, level, mask, None, dense.init, stats_from)",
      T_STATS, "mask statistics forget the previous level (Jaccard, travel of this level's pruned)"),
    m("stats_from_dense_final", "trainers/trajectory.py",
      "        stats_from = source if iterative else dense.final", "        stats_from = dense.final",
      T_STATS, "travel measured on the dense weights, not the weights the mask came from"),
    # --- branch units (orchestrator) ------------------------------------------------------------
    Mutant("branch_computes_own_masks", "orchestrator/units.py", (
        ("    for level in range(levels_done + 1, available + 1):\n"
         '        mask = store.get_tensors(paths.artifact(traj_id, f"L{level}"))["mask"]',
         "    own = {}\n"
         "    for level in range(levels_done + 1, available + 1):\n"
         "        from trainers.trajectory import level_masks\n"
         '        mask = level_masks(setup, dense, level, own["w"].weights if "w" in own else None, own.get("m"))\n'
         '        own["m"] = mask'),
        ("        retrain(setup, level=level, mask=mask, reset=unit.reset, dense=dense, source=source,",
         '        own["w"] = retrain(setup, level=level, mask=mask, reset=unit.reset, dense=dense, source=source,'),
    ), T_BRANCH, "a branch unit (reinit...) computes its own masks from its own weights"),
    m("branch_mask_of_previous_level", "orchestrator/units.py",
      'mask = store.get_tensors(paths.artifact(traj_id, f"L{level}"))["mask"]',
      'mask = store.get_tensors(paths.artifact(traj_id, f"L{max(level - 1, 1)}"))["mask"]',
      T_BRANCH, "a branch retrains level k on the mask of level k-1"),
    m("branch_source_dense", "orchestrator/units.py",
      '    return store.get_tensors(paths.artifact(traj_id, f"L{level - 1}"))["driver"]',
      "    return dense.final",
      T_BRANCH, "finetune branches start from the dense weights at every level"),
    # --- training: what a level's summary reports ------------------------------------------------
    m("best_is_final", "trainers/training.py",
      "= rows[-1], best.test_acc, best.epoch", "= rows[-1], rows[-1].test_acc, best.epoch",
      T_SELECT, "best_test_accuracy recorded as the final epoch's"),
    m("best_epoch_is_last", "trainers/training.py",
      "= rows[-1], best.test_acc, best.epoch", "= rows[-1], best.test_acc, rows[-1].epoch",
      T_SELECT, "best_test_epoch recorded as the last epoch"),
    m("val_selected_by_test", "trainers/training.py",
      "val_sel = max(rows, key=lambda r: r.val_acc).test_acc if has_val else None",
      "val_sel = max(rows, key=lambda r: r.test_acc).test_acc if has_val else None",
      T_SELECT, "val-selected accuracy selected on the test set"),
    m("early_stop_by_val_acc", "trainers/training.py",
      "min(rows, key=lambda r: r.val_loss", "min(rows, key=lambda r: -r.val_acc",
      T_SELECT, "early stop at the best validation accuracy, not the lowest validation loss"),
    m("final_train_loss_first_epoch", "trainers/training.py",
      "final_acc, final_loss = final.test_acc, final.train_loss",
      "final_acc, final_loss = final.test_acc, rows[0].train_loss",
      T_SELECT, "final train loss taken from the first epoch"),
    m("momentum_not_masked", "trainers/training.py",
      "                torch._foreach_mul_(bufs, ms)", "                pass",
      T_TRAIN, "optimizer state of pruned weights not zeroed"),
    m("milestone_off_by_one", "trainers/training.py",
      "lr *= cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m)",
      "lr *= cfg.gamma ** sum(1 for m in cfg.milestones if epoch > m)",
      T_TRAIN, "step schedule decays one epoch late"),
    m("warmup_starts_at_zero", "trainers/training.py",
      "lr *= (iteration + 1) / cfg.warmup_iterations", "lr *= iteration / cfg.warmup_iterations",
      T_TRAIN, "warm-up's first step at lr 0"),
    # --- pruning --------------------------------------------------------------------------------
    m("keep_count_floor", "trainers/pruning.py",
      "return min(n_alive, n_total - int(round(fraction * n_total)))",
      "return min(n_alive, n_total - int(fraction * n_total))",
      T_PRUNE, "kept counts truncated instead of rounded"),
    m("keep_smallest", "trainers/pruning.py",
      "order = torch.sort(s, descending=True, stable=True).indices",
      "order = torch.sort(s.abs(), descending=False, stable=True).indices",
      T_PRUNE, "magnitude pruning keeps the smallest weights"),
    m("previous_mask_ignored", "trainers/pruning.py",
      "    if previous_mask is not None:\n        check_mask(model, previous_mask)",
      "    if False:\n        check_mask(model, previous_mask)",
      T_PRUNE, "iterative masks not nested (pruned weights revive)"),
    m("layer_rate_override_ignored", "trainers/pruning.py",
      "        targets[name] = r\n", "        pass\n",
      T_PRUNE, "prune.layer_rates (the output layer at half rate) ignored"),
    m("structured_consumers_kept", "trainers/pruning.py",
      "        m[:, cols] = False", "        pass",
      T_PRUNE, "structured pruning leaves the consumer layer's input slices"),
    m("level_rate_linear", "trainers/pruning.py",
      "    return 1.0 - (1.0 - rate) ** level", "    return min(rate * level, 0.99)",
      T_PRUNE, "density after k levels is 1 - k*rate, not (1-rate)^k"),
    # --- mask statistics ------------------------------------------------------------------------
    m("jaccard_over_size", "trainers/stats.py",
      "inter.float() / union.clamp(min=1)", "inter.float() / m.numel()",
      T_STATS, "Jaccard divides by the layer size, not the union"),
    m("travel_pruned_cumulative", "trainers/stats.py",
      "    pruned_now = prev_m & ~m", "    pruned_now = ~m",
      T_STATS, "travel of 'pruned at this level' counts every pruned weight"),
    m("sign_agreement_all", "trainers/stats.py",
      "((torch.sign(init) == torch.sign(final)) & m).sum()", "(torch.sign(init) == torch.sign(final)).sum()",
      T_STATS, "sign agreement counts pruned weights too"),
    # --- plan keys ------------------------------------------------------------------------------
    m("dense_key_drops_data", "orchestrator/plan.py",
      'for x in ("data", "model", "train", "seed")})', 'for x in ("model", "train", "seed")})',
      T_PLAN, "the dense-run key loses the data settings (a dataset sweep shares one dense run)"),
    m("dense_key_drops_seed", "orchestrator/plan.py",
      'for x in ("data", "model", "train", "seed")})', 'for x in ("data", "model", "train")})',
      T_PLAN, "the dense-run key loses the seed"),
    Mutant("trajectory_key_drops_driver", "orchestrator/plan.py",
           (('    prune = dict(cell.config["prune"])\n',
             '    prune = {k: v for k, v in cell.config["prune"].items() if k != "mask_driver"}\n'),
            ('"code": unit_stamps("trajectory", cell.setup, cell.config["prune"]["mask_driver"])}',
             '"code": unit_stamps("trajectory", cell.setup, "rewind")}')),
           T_PLAN, "the trajectory key loses the mask driver (its settings and its reset's stamp)"),
    m("driver_rewind_point_lost", "orchestrator/plan.py",
      'for p in (_rewind_k(c.reset), _rewind_k(c.config["prune"]["mask_driver"]))',
      "for p in (_rewind_k(c.reset),)",
      T_PLAN, "a rewind@k mask driver gets no snapshot from the dense run"),
    m("branch_key_drops_reset", "orchestrator/plan.py",
      'bid = "b-" + stable_hash({"stage": "branch", "trajectory": tid, "reset": reset,\n                                      "code": unit_stamps("branch", c0.setup, reset)})',
      'bid = "b-" + stable_hash({"stage": "branch", "trajectory": tid})',
      T_PLAN, "the branch key loses the reset (its name and its stamp)"),
    # --- analysis statistics --------------------------------------------------------------------
    m("std_ddof0", "analysis/rethinking_lr.py",
      "    std = float(values.std(ddof=1))", "    std = float(values.std(ddof=0))",
      T_ANALYSIS, "std over seeds with ddof 0"),
    m("t_dof_n", "analysis/rethinking_lr.py",
      "half = float(stdtrit(n - 1, 0.5 + confidence / 2))", "half = float(stdtrit(n, 0.5 + confidence / 2))",
      T_ANALYSIS, "t-interval with n instead of n-1 degrees of freedom"),
    m("p_value_one_sided", "analysis/rethinking_lr.py",
      "return float(2 * stdtr(n - 1, -abs(t)))", "return float(stdtr(n - 1, -abs(t)))",
      T_ANALYSIS, "one-sided p-value"),
    m("side_includes_missing", "analysis/rethinking_lr.py",
      "            sel = ok & (side == value)", "            sel = side == value",
      T_ANALYSIS, "runs without the metric (or not done) counted in a side"),
    m("diff_reversed", "analysis/rethinking_lr.py",
      "diffs = np.array([t[k] - c[k] for k in paired], dtype=float)",
      "diffs = np.array([c[k] - t[k] for k in paired], dtype=float)",
      T_ANALYSIS, "the paired difference is control minus treatment"),
    m("summary_ci_90", "analysis/rethinking_lr.py",
      "stdtrit(np.maximum(n - 1, 1), 0.975)", "stdtrit(np.maximum(n - 1, 1), 0.95)",
      T_ANALYSIS, "summary CI at 90% instead of 95%"),
    m("table_best_is_max_always", "analysis/tables.py",
      "best = wide_mean.max(axis=1) if higher_is_better else wide_mean.min(axis=1)",
      "best = wide_mean.max(axis=1)",
      T_TABLES, "lower-is-better tables (loss) bold the worst value"),
    m("table_numeric_best_max", "analysis/tables.py",
      '.transform("max" if higher_is_better else "min")', '.transform("max")',
      T_TABLES, "the CSV 'best' column ignores the direction"),
    m("sql_guard_removed", "analysis/sql.py",
      "    if kind != duckdb.StatementType.SELECT:", "    if False:",
      T_SQL, "lth sql's statement guard removed (only the locked connection is left)",
      ("-k", "refuses_writes")),
]


def check_applies(root: Path) -> list[str]:
    """Problems: mutants whose old text is not exactly once in its file under ``root``."""
    problems = []
    names = [mu.name for mu in MUTANTS]
    if len(set(names)) != len(names):
        problems.append("duplicate mutant names")
    for mu in MUTANTS:
        path = root / mu.file
        if not path.is_file():
            problems.append(f"{mu.name}: {mu.file} does not exist")
            continue
        text = path.read_text()
        for old, new in mu.edits:
            n = text.count(old)
            if n != 1:
                problems.append(f"{mu.name}: expected the text once in {mu.file}, found {n}: {old[:60]!r}")
            if old == new:
                problems.append(f"{mu.name}: a replacement equal to the original")
        for t in mu.tests:
            if not (root / t.split("::")[0]).is_file():
                problems.append(f"{mu.name}: test file {t} does not exist")
    return problems


def _export(rev: str, dest: Path, paths: tuple[str, ...] = ()) -> None:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, *paths], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)


def _run(root: Path, args: list[str], timeout: int) -> tuple[int | None, float, list[str], str]:
    env = dict(os.environ, PYTHONPATH=str(root), CI="1", PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header", "-rf", "-o", "addopts=",
           *args]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - t0, [], "timeout"
    lines = r.stdout.strip().splitlines() or [""]
    failed = [ln.split(" ", 1)[1].split(" - ")[0] for ln in lines if ln.startswith("FAILED ")]
    return r.returncode, time.perf_counter() - t0, failed, lines[-1]


def _clean_args(root: Path, test: str, extra: tuple[str, ...], timeout: int) -> list[str] | None:
    """pytest arguments for ``test`` without its tests that fail unmutated (``--deselect``), or
    None when the file is absent or cannot run at all."""
    if not (root / test.split("::")[0]).is_file():
        print(f"  (dropped {test}: absent in this revision)")
        return None
    rc, _, failed, tail = _run(root, [*extra, test], timeout)
    if rc == 0:
        return [test]
    if rc == 1 and failed:
        print(f"  ({test}: {len(failed)} test(s) fail unmutated, deselected: {', '.join(failed)})")
        return [test, *(a for f in failed for a in ("--deselect", f))]
    print(f"  (dropped {test}: does not run unmutated: {tail})")
    return None


# mutmut 3 (every operator of every line) where the related tests take seconds: module -> tests.
MUTMUT_TARGETS: dict[str, tuple[str, ...]] = {
    "orchestrator/plan.py": ("tests/test_plan.py", "tests/test_unit_keys.py",
                             "tests/test_bad_specs.py::test_committed_campaign_ids_unchanged"),
    "analysis/tables.py": ("tests/test_science_tables.py",),
    "analysis/paired_tests.py": ("tests/test_analysis_decisions.py", "tests/test_paired_tests_reference.py"),
    "trainers/stats.py": ("tests/test_stats.py",),
    "trainers/resets.py": ("tests/test_science_resets.py", "tests/test_trajectory.py"),
}


def run_mutmut(rev: str, modules: list[str], keep: bool) -> int:
    """``mutmut run`` over each module in its own temp copy (mutmut writes ``mutants/`` next to the
    sources); prints killed / survived / no tests per module and the survivors' names."""
    mutmut = Path(sys.executable).with_name("mutmut")
    for module in modules:
        tests = MUTMUT_TARGETS[module]
        tmp = Path(tempfile.mkdtemp(prefix="lth-mutmut-"))
        try:
            _export(rev, tmp)
            package = module.split("/")[0]
            others = sorted({"trainers", "orchestrator", "analysis", "scripts", "campaigns"} - {package})
            (tmp / "setup.cfg").write_text(
                "[mutmut]\nsource_paths=\n    " + package + "/\nonly_mutate=\n    " + module
                + "\npytest_add_cli_args_test_selection=\n" + "".join(f"    {t}\n" for t in tests)
                + "also_copy=\n" + "".join(f"    {o}/\n" for o in others))
            t0 = time.perf_counter()
            env = dict(os.environ, CI="1")
            subprocess.run([str(mutmut), "run", "--max-children", "1"], cwd=tmp, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            out = subprocess.run([str(mutmut), "results", "--all", "true"], cwd=tmp, env=env,
                                 capture_output=True, text=True).stdout
            status: dict[str, list[str]] = {}
            for line in out.splitlines():
                name, _, st = line.strip().rpartition(": ")
                if name:
                    status.setdefault(st, []).append(name)
            killed = len(status.get("killed", []))
            total = sum(len(v) for v in status.values())
            print(f"{module}: {killed}/{total} killed ({100 * killed / max(total, 1):.0f}%) in "
                  f"{time.perf_counter() - t0:.0f}s; " + ", ".join(f"{k} {len(v)}" for k, v in sorted(status.items())))
            for st, names in sorted(status.items()):
                if st != "killed":
                    for n in names:
                        print(f"  {st}: {n}")
            if keep:
                print(f"  (copy kept: {tmp}; `mutmut show NAME` there)")
        finally:
            if not keep:
                shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rev", default="HEAD", help="revision whose sources are mutated (default HEAD)")
    ap.add_argument("--tests-rev", default=None, help="take tests/ from this revision instead (a 'before' run)")
    ap.add_argument("--only", default="", help="comma-separated mutant names")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per pytest run")
    ap.add_argument("--keep", action="store_true", help="keep the temp copy")
    ap.add_argument("--mutmut", default=None, metavar="MODULES",
                    help=f"run mutmut 3 instead, over these comma-separated modules ('all': {', '.join(MUTMUT_TARGETS)})")
    args = ap.parse_args()
    if args.mutmut:
        modules = list(MUTMUT_TARGETS) if args.mutmut == "all" else args.mutmut.split(",")
        unknown = [mo for mo in modules if mo not in MUTMUT_TARGETS]
        if unknown:
            ap.error(f"--mutmut: no fast tests mapped for {unknown}; known: {list(MUTMUT_TARGETS)}")
        return run_mutmut(args.rev, modules, args.keep)
    if args.list:
        for mu in MUTANTS:
            print(f"{mu.name:32s} {mu.file:28s} {mu.what}")
        return 0
    chosen = [mu for mu in MUTANTS if not args.only or mu.name in args.only.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="lth-mutation-"))
    root = tmp / "repo"
    root.mkdir()
    try:
        _export(args.rev, root)
        if args.tests_rev:
            shutil.rmtree(root / "tests")
            _export(args.tests_rev, root, ("tests",))
        problems = check_applies(root)
        bad = [p for p in problems if "test file" not in p]
        if bad:
            print("mutants that do not apply:\n  " + "\n  ".join(bad))
            return 2
        where = subprocess.run([sys.executable, "-c", "import trainers; print(trainers.__file__)"], cwd=root,
                               env=dict(os.environ, PYTHONPATH=str(root)), capture_output=True, text=True).stdout
        if not where.startswith(str(root)):
            print(f"the copy's packages do not shadow the installed ones ({where.strip()})")
            return 2
        print(f"sources {args.rev}, tests {args.tests_rev or args.rev}, copy {root}")
        # Per related test file: the arguments that pass unmutated (the only tests that may kill).
        clean: dict[tuple[str, tuple[str, ...]], list[str] | None] = {}
        for mu in chosen:
            for t in mu.tests:
                if (t, mu.extra) not in clean:
                    clean[(t, mu.extra)] = _clean_args(root, t, mu.extra, args.timeout)
        rows = []
        for mu in chosen:
            path = root / mu.file
            original = path.read_text()
            text = original
            for old, new in mu.edits:
                text = text.replace(old, new, 1)
            path.write_text(text)
            # Newest (most targeted, fastest) test files first: with -x a kill stops the run early.
            tests = [a for t in reversed(mu.tests) if clean[(t, mu.extra)] for a in clean[(t, mu.extra)]]
            try:
                if not tests:
                    verdict, secs, tail = "no tests", 0.0, ""
                else:
                    rc, secs, failed, tail = _run(root, ["-x", *mu.extra, *tests], args.timeout)
                    verdict = "survived" if rc == 0 else "caught"
                    tail = failed[0] if failed else tail
            finally:
                path.write_text(original)
            rows.append((mu, verdict))
            print(f"{verdict:9s} {mu.name:32s} {secs:6.1f}s  {mu.what}  [{tail}]", flush=True)
        caught = sum(v == "caught" for _, v in rows)
        print(f"\n{caught}/{len(rows)} mutants caught; survived: "
              + (", ".join(mu.name for mu, v in rows if v != "caught") or "none"))
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
