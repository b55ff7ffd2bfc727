"""``lth report``: one campaign's rewind-vs-reinit verdicts, tables and figures in a directory.

Writes ``report.md`` (embedding the tables and figures) plus ``verdicts.{md,tex,csv}``,
``accuracy.{md,tex,csv}``, ``comparison.csv`` (every level, every metric) and the figures as
``.png`` and ``.pdf``. ``generic_comparison`` backs ``lth compare`` (any axis).

Rendering the figures (PNG + PDF each) is most of a report's time (~0.5 s per figure on one
core) and does not depend on the store's size. Each figure is identified by a digest of its
plotted data, its plotting code and matplotlib's version, and is drawn once per machine:
  * a figure already in ``out_dir`` with the same digest (``<out>/.figure-digests.json``) is kept;
  * else a figure with that digest in the figure cache is copied — the cache is
    ``$LTH_FIGURE_CACHE`` or ``${XDG_CACHE_HOME:-~/.cache}/lth-sweep/figures``, shared by every
    report on the machine, so the report ``lth run`` writes at the end of a campaign makes a
    later ``lth report --out paper/`` quick; the newest ``FIGURE_CACHE_ENTRIES`` are kept;
  * else it is drawn, then added to the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import rethinking_lr
from analysis.rethinking_lr import METRICS, SETTING_KEYS
from analysis.tables import csv_table, latex_table, markdown_table, mean_std_table
from analysis.views import connect, open_store
from orchestrator.store import Store


class ReportError(ValueError):
    """The campaign cannot be reported (absent, or no level rows)."""


@dataclass
class Report:
    out_dir: Path
    verdicts: pd.DataFrame  # display frame printed to the terminal
    problems: list[str]
    files: list[Path] = field(default_factory=list)
    figures_drawn: int = 0  # figures rendered by this report (the others were kept or copied from the cache)


def _display_keys(df: pd.DataFrame) -> list[str]:
    """Setting keys worth showing: drop campaign (one per report) and constant-empty extra axes."""
    keys = [k for k in SETTING_KEYS if k != "campaign"]
    if "extra" in df and not df["extra"].astype(bool).any():
        keys.remove("extra")
    return keys


def _verdict_table(results: dict[str, rethinking_lr.RethinkingResult], keys: list[str], treatment: str = "rewind",
                   control: str = "reinit") -> pd.DataFrame:
    best = results["best"].verdicts
    table = best[keys].copy()
    table["levels"] = best["testable"].astype(str) + "/" + best["levels"].astype(str)
    table["gain (pts)"] = (100 * best["mean_gain"]).round(2)
    table["better/equiv/worse/undecided"] = (best["better"].astype(str) + "/" + best["equivalent"].astype(str) + "/"
                                             + best["worse"].astype(str) + "/" + best["undecided"].astype(str))
    table[f"diverged ({treatment}/{control})"] = (best["diverged_treatment"].astype(str) + "/"
                                                  + best["diverged_control"].astype(str))
    table["sd (pts)"] = (100 * best["sd_diff"]).round(2)
    table["MDE80 (pts)"] = (100 * best["mde80"]).round(2)
    table["seeds"] = best["pairs"]
    table["seeds needed"] = [rethinking_lr.seeds_text(x) if x == x else "" for x in best["seeds_needed"]]
    for metric, res in results.items():
        table[f"verdict ({metric})"] = res.verdicts["verdict"].to_numpy()
    table["reason (best)"] = best["reason"]
    return table


CHANNEL_KEYS = ["dataset", "arch", "structure", "schedule", "lr", "level"]


def _channel_density(con, campaign: str) -> pd.DataFrame:
    """Percent of channels / neurons kept per (setting, level): per trial over its channel groups, then
    averaged over trials (empty for stores without channel rows)."""
    keys = ", ".join(CHANNEL_KEYS)
    return con.execute(
        f"SELECT {keys}, round(100 * avg(ch), 2) AS \"channels %\" FROM (SELECT {keys}, trial_id, "
        "sum(kept) / sum(params) AS ch FROM cell_masks WHERE campaign = $c AND kind = 'channel' GROUP BY ALL) "
        "GROUP BY ALL", {"c": campaign}).df()


def _travel_table(travel: pd.DataFrame) -> str:
    """Markdown: per (structure, lr) mean travel of kept, pruned and selection-only weights over levels."""
    t = travel.groupby(["structure", "lr"], as_index=False)[["travel_kept", "travel_pruned", "travel_kept_null"]].mean()
    t["kept / selection only"] = (t["travel_kept"] / t["travel_kept_null"]).round(3)
    t = t.rename(columns={"travel_kept": "kept", "travel_pruned": "pruned", "travel_kept_null": "selection only"})
    for c in ("kept", "pruned", "selection only"):
        t[c] = t[c].round(4)
    return markdown_table(t)


def rule_text(treatment: str, control: str, margin: float) -> str:
    """The verdict rule in words, as the report states it."""
    m = f"{100 * margin:g}"
    return (
        f"Rule: per level, the paired (by seed) difference {treatment} − {control} of the accuracy metric is "
        f"*better* if its 95% t-interval lies above 0 and the gain is at least {m} points, *worse* if the interval "
        f"lies below 0 and the gain is at most −{m}, *equivalent* if two one-sided tests at ±{m} points reject "
        f"(the 90% interval lies inside ±{m}), else *undecided*; each test's p-values are Holm-corrected over the "
        "setting's levels; levels with fewer than two seed pairs are not testable. A diverged run scores chance "
        "accuracy (a loss for its side) and is counted. Verdict: *yes* if a strict majority of testable levels "
        "is better, *no* if a strict majority is equivalent or worse, otherwise *undecided*. Settings are not "
        "corrected against each other. `sd` is the pooled SD of the paired differences, `MDE80` the smallest "
        "gain whose interval would lie above 0 with 80% power at the current seeds, `seeds needed` the seeds "
        "per level at which a majority of levels would be decided with 80% power if the true gains were the "
        "observed ones (noncentral t at α / levels, Bonferroni). `best` = best test accuracy over epochs (the Rethinking "
        "protocol), `final` = last epoch, `val` = test accuracy at the best-validation epoch."
    )


FIGURE_DIGESTS = ".figure-digests.json"


def _rows_digest(frame: pd.DataFrame) -> str:
    """Digest of a frame's rows in any order, floats to 12 decimals: DuckDB's parallel GROUP BY
    returns rows in varying order and averages that differ in the last bits between runs."""
    floats = frame.select_dtypes("float").columns
    frame = frame.assign(**{c: frame[c].round(12) for c in floats})
    try:
        rows = pd.util.hash_pandas_object(frame, index=False).sort_values().to_numpy()
    except TypeError:  # unhashable cells (lists): fall back to the text, sorted by line
        return "\n".join(sorted(frame.to_csv(index=False).splitlines()))
    return hashlib.sha256(",".join(map(str, frame.columns)).encode() + rows.tobytes()).hexdigest()


FIGURE_CACHE_ENTRIES = 400  # figures (a PNG + PDF pair, ~0.2 MB) kept in the shared cache


def figure_cache_dir() -> Path:
    """The machine-wide figure cache (module docstring)."""
    if os.environ.get("LTH_FIGURE_CACHE"):
        return Path(os.environ["LTH_FIGURE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lth-sweep" / "figures"


class _FigureCache:
    """Keep, copy or draw each figure (see the module docstring)."""

    SUFFIXES = (".png", ".pdf")

    def __init__(self, out: Path):
        from importlib.metadata import version

        # matplotlib (~0.7 s to import) is loaded only when a figure must be drawn: the digest
        # needs just plots.py's bytes and matplotlib's version.
        self._plots, self.path = None, out / FIGURE_DIGESTS
        self.shared = figure_cache_dir()
        plots_file = Path(__file__).with_name("plots.py")
        self.code = hashlib.sha256(plots_file.read_bytes() + version("matplotlib").encode()).hexdigest()
        try:
            self.digests = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.digests = {}
        self.added = 0

    def draw(self, name: str, frame: pd.DataFrame, base: Path, **kwargs) -> list[Path]:
        """``plots.<name>(frame, base, **kwargs)`` unless its files exist and its inputs are unchanged."""
        digest = hashlib.sha256("\n".join([self.code, name, repr(sorted(kwargs.items())), str(frame.dtypes.to_dict()),
                                           _rows_digest(frame)]).encode()).hexdigest()
        paths = [base.with_suffix(s) for s in self.SUFFIXES]
        if self.digests.get(base.name) == digest and all(p.exists() for p in paths):
            return paths
        self.digests.pop(base.name, None)
        self._save()  # forget the old digest first: an interrupted redraw is redone next time
        cached = [self.shared / f"{digest}{s}" for s in self.SUFFIXES]
        if self._copy(cached, paths):
            for c in cached:  # a hit counts as recent use for pruning
                with contextlib.suppress(OSError):
                    os.utime(c)
        else:
            if self._plots is None:
                from analysis import plots

                self._plots = plots
            paths = getattr(self._plots, name)(frame, base, **kwargs)
            self._copy(paths, cached)
            self.added += 1
        self.digests[base.name] = digest
        self._save()
        return paths

    @staticmethod
    def _copy(sources: list[Path], targets: list[Path]) -> bool:
        """Copy each source over its target, each atomically (temp file + rename: a reader never
        sees half a figure, concurrent reports never collide); False if a source is missing or a
        copy fails (the cache is an optimisation: an unwritable cache never fails a report)."""
        try:
            for src, dst in zip(sources, targets):
                dst.parent.mkdir(parents=True, exist_ok=True)
                tmp = dst.with_name(f".tmp-{uuid.uuid4().hex}-{dst.name}")
                try:
                    shutil.copyfile(src, tmp)
                    os.replace(tmp, dst)
                finally:
                    tmp.unlink(missing_ok=True)
        except OSError:
            return False
        return True

    def _save(self) -> None:
        self.path.write_text(json.dumps(self.digests, sort_keys=True))

    def prune(self) -> None:
        """Keep the newest ``FIGURE_CACHE_ENTRIES`` figures of the shared cache (by mtime)."""
        if not self.added:
            return
        try:
            files = sorted(self.shared.glob("*.png"), key=lambda p: p.stat().st_mtime, reverse=True)
            for png in files[FIGURE_CACHE_ENTRIES:]:
                for s in self.SUFFIXES:
                    png.with_suffix(s).unlink(missing_ok=True)
        except OSError:  # a concurrent prune removed a file first: nothing to do
            pass


def build_report(
    store: Store | str | os.PathLike | None,
    campaign: str,
    out_dir: str | os.PathLike,
    *,
    margin: float = rethinking_lr.DEFAULT_MARGIN,
    treatment: str = rethinking_lr.TREATMENT,
    control: str = rethinking_lr.CONTROL,
    on_verdicts: Callable[[Report], None] | None = None,
) -> Report:
    """Analyse ``campaign`` and write the report files into ``out_dir`` (created).

    ``on_verdicts(report)`` is called once the tables are written and before the figures are
    drawn (most of a new report's time), with ``report.files`` so far: ``lth report`` prints the
    verdicts there, so the answer shows at once. The returned ``Report`` lists every file."""
    store = open_store(store)
    con = connect(store, campaign=campaign)
    runs = rethinking_lr.load_runs(con, campaign)
    if runs.empty:
        raise ReportError(
            f"campaign {campaign!r} has no level rows in store {store.uri} "
            f"(campaigns there: {store.campaigns() or 'none'})"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if runs[METRICS["best"]].isna().all():  # a regression task: compared on test loss (analysis/loss_report.py)
        return _loss_report(con, campaign, out, runs, treatment, control, on_verdicts)
    results = {}
    for metric in METRICS:
        if runs[METRICS[metric]].notna().any():
            results[metric] = rethinking_lr.analyse(con, campaign, metric=metric, treatment=treatment,
                                                    control=control, margin=margin, runs=runs)
    best = results["best"]
    keys = _display_keys(runs)
    files: list[Path] = []

    def write(name: str, text: str) -> None:
        path = out / name
        path.write_text(text)
        files.append(path)

    verdicts = _verdict_table(results, keys, treatment, control)
    write("verdicts.md", markdown_table(verdicts))
    write("verdicts.tex", latex_table(verdicts, caption=f"Does the winning ticket ({treatment}) beat {control}? "
                                       f"Campaign {campaign}.", label="tab:lth-verdicts"))
    write("verdicts.csv", csv_table(verdicts))

    summary = best.summary[best.summary["level"] > 0].copy()
    summary["weights %"] = (100 * summary["density"]).round(2)
    level_cols = ["weights %"]
    channels = _channel_density(con, campaign)
    if not channels.empty and (summary["structure"] == "structured").any():
        # structured levels also in channels / neurons kept (of the channel groups; the output layer's
        # classes are never removed), as the campaigns describe them
        summary = summary.merge(channels, on=CHANNEL_KEYS, how="left")
        summary["channels %"] = summary["channels %"].where(summary["structure"] == "structured")
        level_cols.append("channels %")
    acc = mean_std_table(summary, [*keys, *level_cols], "reset")
    acc.display = acc.display.sort_values([*keys, "weights %"], ascending=[True] * len(keys) + [False])
    acc.bold = acc.bold.loc[acc.display.index]
    acc.display, acc.bold = acc.display.reset_index(drop=True), acc.bold.reset_index(drop=True)
    write("accuracy.md", acc.markdown())
    write("accuracy.tex", acc.latex(caption=f"Best test accuracy (%) over epochs, mean ± std over seeds. "
                                             f"Campaign {campaign}.", label="tab:lth-accuracy"))
    write("accuracy.csv", acc.csv())
    comparison = pd.concat([r.comparison.assign(metric=m) for m, r in results.items()], ignore_index=True)
    write("comparison.csv", csv_table(comparison))
    report = Report(out_dir=out, verdicts=verdicts, problems=best.problems, files=files)
    if on_verdicts is not None:
        on_verdicts(report)

    figures = []
    cache = _FigureCache(out)
    for (dataset, arch), sub in best.summary.groupby(["dataset", "arch"], sort=True):
        base = out / f"accuracy_{dataset}_{arch}"
        files += cache.draw("accuracy_vs_density", sub, base, title=f"{dataset}, {arch}")
        figures.append((f"Accuracy vs weights remaining: {dataset}, {arch}", base.with_suffix(".png").name))
    masks = con.execute(
        "SELECT structure, schedule, lr, level, layer, avg(density) AS density, avg(travel_kept) AS travel_kept, "
        "avg(travel_pruned) AS travel_pruned, avg(travel_kept_null) AS travel_kept_null FROM cell_masks "
        "WHERE campaign = $c AND kind = 'weight' GROUP BY ALL", {"c": campaign}).df()
    travel_md = ""
    if not masks.empty:
        dens = masks.groupby(["structure", "schedule", "level", "layer"], as_index=False)["density"].mean()
        files += cache.draw("layer_density", dens, out / "layer_density")
        figures.append(("Per-layer density per level", "layer_density.png"))
        cols = ["travel_kept", "travel_pruned", "travel_kept_null"]
        travel = masks.groupby(["structure", "lr", "level"], as_index=False)[cols].mean()
        if travel["travel_pruned"].notna().any():
            files += cache.draw("weight_travel", travel, out / "weight_travel")
            figures.append(("Weight travel of kept vs pruned weights, and of the weights magnitude selection "
                            "alone would keep (displacements permuted)", "weight_travel.png"))
            travel_md = _travel_table(travel)
            write("weight_travel.md", travel_md)

    md = [f"# Campaign `{campaign}`: winning ticket ({treatment}) vs {control}", ""]
    if best.problems:
        md += ["**What this store cannot show:**", ""] + [f"- {p}" for p in best.problems] + [""]
    md += ["## Verdicts", "", markdown_table(verdicts),
           rule_text(treatment, control, margin), "",
           "## Accuracy (best over epochs, %, mean ± std over seeds; best per row in bold)", "", acc.markdown()]
    md += ["## Figures", ""] + [f"![{cap}]({name})\n" for cap, name in figures]
    if travel_md:
        md += ["## Weight travel: kept vs pruned, with the selection control", "",
               "Mean |θ_final − θ_init| over levels. Kept weights travelling further than pruned ones is what "
               "magnitude pruning selects (the survivors are the large final weights), so it is no finding by "
               "itself; `selection only` is the travel of as many weights chosen by magnitude after the "
               "displacements were permuted within each layer. Only kept travel above that control (ratio > 1) "
               "says more than selection.", "", travel_md]
    md += ["Per-level comparisons of every metric (means, CIs, paired differences, p-values): `comparison.csv`.", ""]
    md += _extra_sections(con, campaign, out, files)
    write("report.md", "\n".join(md))
    cache.prune()
    report.figures_drawn = cache.added
    return report


def _extra_sections(con, campaign: str, out: Path, files: list[Path]) -> list[str]:
    """Supermask, lucky-node and BatchNorm-bias sections, each present when its rows are."""
    from analysis.lucky_report import bn_section, lucky_section
    from analysis.supermask_report import supermask_section

    md: list[str] = []
    for section in (supermask_section, lucky_section, bn_section):
        sec = section(con, campaign, out)
        md += sec.md
        files += sec.files
    return md


def _loss_report(con, campaign: str, out: Path, runs: pd.DataFrame, treatment: str, control: str,
                 on_verdicts: Callable[[Report], None] | None) -> Report:
    from analysis.loss_report import write_loss_report

    files: list[Path] = []
    keys = _display_keys(runs)
    sections = _extra_sections(con, campaign, out, files)
    comp = write_loss_report(con, campaign, out, keys, treatment, control, sections, files)
    report = Report(out_dir=out, verdicts=comp, problems=[], files=files)
    if on_verdicts is not None:
        on_verdicts(report)
    return report


def generic_comparison(
    store: Store | str | os.PathLike | None,
    campaign: str,
    axis: str,
    treatment: str | None = None,
    control: str | None = None,
    *,
    metric: str = "best",
    margin: float = rethinking_lr.DEFAULT_MARGIN,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Paired comparison of two values of any axis (e.g. schedule iterative vs oneshot) within the
    other axes; returns (per-level comparison, verdicts with the same rule as the report)."""
    con = connect(store, campaign=campaign)
    runs = rethinking_lr.load_runs(con, campaign)
    runs = runs[runs["level"] > 0]
    if axis not in runs.columns or axis == "seed":
        raise ValueError(f"axis {axis!r}: expected one of {[k for k in rethinking_lr.RUN_KEYS if k != 'seed']}")
    values = sorted(runs[axis].astype(str).unique())
    for v in (treatment, control):
        if v is not None and str(v) not in values:
            raise ValueError(f"axis {axis!r} has no value {v!r} in campaign {campaign!r} (values: {values})")
    if treatment is None or control is None:
        if len(values) != 2:
            raise ValueError(f"axis {axis!r} has values {values}: pass --treatment and --control")
        if treatment is None and control is None:
            treatment, control = values
        elif treatment is None:
            treatment = next(v for v in values if v != str(control))
        else:
            control = next(v for v in values if v != str(treatment))
    comparison = rethinking_lr.compare(runs, axis, treatment, control, metric)
    group_keys = [k for k in comparison.columns if k in rethinking_lr.RUN_KEYS and k != "level"]
    return comparison, rethinking_lr.verdicts(comparison, margin, group_keys)
