"""Click commands ``sql``, ``report`` and ``compare``; orchestrator/cli.py adds ``COMMANDS`` to ``lth``."""

from __future__ import annotations

import click

from analysis import rethinking_lr
from analysis.report import ReportError, build_report, generic_comparison
from analysis.sql import FORMATS, SqlError, format_result, run_sql
from analysis.tables import markdown_table
from analysis.views import read_consistent

store_option = click.option(
    "--store", envvar="LTH_STORE", default="lth-store", show_default=True,
    help="Store root: a path or a pyarrow filesystem URI (env LTH_STORE).",
)


@click.command()
@click.argument("query")
@store_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
def sql(query: str, store: str, fmt: str) -> None:
    """Run one read-only SQL query over the store's views (trials, metrics, levels, masks, cell_*)."""
    try:  # a query that met a compaction's vacuum re-reads the new version
        click.echo(format_result(read_consistent(store, lambda con: run_sql(con, query)), fmt))
    except SqlError as e:
        raise click.ClickException(str(e)) from None


@click.command()
@click.argument("campaign")
@store_option
@click.option("--out", "out_dir", default=None, help="Output directory [default: reports/<campaign>].")
@click.option("--margin", type=float, default=rethinking_lr.DEFAULT_MARGIN, show_default=True,
              help="Smallest accuracy gain (fraction) that matters for a 'no' verdict.")
def report(campaign: str, store: str, out_dir: str | None, margin: float) -> None:
    """Write the rewind-vs-reinit report of CAMPAIGN (Markdown, LaTeX, CSV, PNG, PDF); print the verdicts."""
    write_and_print_report(store, campaign, out_dir, margin)


def write_and_print_report(store, campaign: str, out_dir: str | None,
                           margin: float = rethinking_lr.DEFAULT_MARGIN) -> None:
    """Build the report of ``campaign`` (default dir reports/<campaign>) and print its verdict table."""
    def show(report) -> None:  # called before the figures are drawn: the answer first
        for problem in report.problems:
            click.echo(f"note: {problem}", err=True)
        click.echo(markdown_table(report.verdicts))

    try:
        result = build_report(store, campaign, out_dir or f"reports/{campaign}", margin=margin, on_verdicts=show)
    except ReportError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"report: {result.out_dir / 'report.md'} ({len(result.files)} files; "
               f"{result.figures_drawn} figure(s) drawn, the others unchanged or from the figure cache)")


@click.command()
@click.argument("campaign")
@click.option("--axis", required=True, help="Axis to compare: reset, schedule, lr, structure, arch, dataset, ...")
@click.option("--treatment", default=None, help="Value of the axis on the left of the difference.")
@click.option("--control", default=None, help="Value on the right (both optional when the axis has two values).")
@click.option("--metric", type=click.Choice(sorted(rethinking_lr.METRICS)), default="best", show_default=True)
@click.option("--margin", type=float, default=rethinking_lr.DEFAULT_MARGIN, show_default=True)
@click.option("--levels/--no-levels", default=False, help="Also print the per-level comparison.")
@store_option
def compare(campaign: str, axis: str, treatment: str | None, control: str | None, metric: str, margin: float,
            levels: bool, store: str) -> None:
    """Paired comparison (by seed) of two values of any axis within the other axes of CAMPAIGN."""
    try:
        per_level, verdicts = generic_comparison(store, campaign, axis, treatment, control, metric=metric,
                                                 margin=margin)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if levels:
        click.echo(markdown_table(per_level.drop(columns=["campaign"])))
    click.echo(markdown_table(verdicts.drop(columns=["campaign"])))


COMMANDS = [sql, report, compare]
