"""``lth``: run, validate and inspect campaigns (``lth sql`` / ``lth report`` come from analysis)."""

from __future__ import annotations

import os
import sys

import click

from orchestrator.spec import Campaign, SpecError, check_store_writable, load_campaign

DEFAULT_STORE = "./lth-store"
store_option = click.option(
    "--store",
    envvar="LTH_STORE",
    default=DEFAULT_STORE,
    show_default=True,
    help="Result store: a local directory or a pyarrow filesystem URI (s3://...). Env: LTH_STORE.",
)


class _LthGroup(click.Group):
    """``lth``'s command group: the analysis commands (``sql``, ``report``, ``compare``) are
    imported only when one of them is invoked or help lists them. Importing ``analysis.cli``
    pulls in duckdb, pandas, scipy and matplotlib (~1.6 s), which ``lth status`` / ``lth run``
    do not need: ``lth status`` must stay interactive on large stores."""

    LAZY = ("sql", "report", "compare")  # analysis.cli.COMMANDS, by name (checked on load)

    def _analysis(self) -> None:
        if any(name not in self.commands for name in self.LAZY):
            from analysis.cli import COMMANDS

            for cmd in COMMANDS:
                self.add_command(cmd)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._analysis()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY:
            self._analysis()
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context):
        """A store that cannot be opened or read (a bad S3 setting, a missing bucket, an unreadable
        table) is the user's to fix: one line naming the store and the setting, no traceback."""
        from orchestrator.store import StoreError

        try:
            return super().invoke(ctx)
        except StoreError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=_LthGroup)
def main() -> None:
    """lth-sweep: pruning / lottery-ticket sweeps on Ray Tune with a Parquet result store."""


def _load(path: str, data_check: bool = True, max_cells: int | None = None) -> Campaign:
    try:
        return load_campaign(path, data_check=data_check, max_cells=max_cells)
    except SpecError as e:
        raise click.ClickException(str(e)) from None


max_cells_option = click.option(
    "--max-cells", type=click.IntRange(min=1), default=None,
    help="Refuse grids of more cells than this (default: the campaign's max_cells, else 100,000).")


@main.command()
@click.argument("campaign", type=click.Path(dir_okay=False))
@click.option("--data-check/--no-data-check", default=True, show_default=True,
              help="Check dataset roots and files; --no-data-check plans a campaign whose data is elsewhere "
                   "(e.g. a cluster's) and says so.")
@max_cells_option
def validate(campaign: str, data_check: bool, max_cells: int | None) -> None:
    """Validate CAMPAIGN.yaml and print what it would run vs a naive grid."""
    from orchestrator.plan import make_plan

    c = _load(campaign, data_check, max_cells)
    plan = make_plan(c)
    click.echo(f"campaign {c.name}: valid" + (" (data not checked)" if not data_check else ""))
    for line in c.notes:
        click.echo(f"  note: {line}")
    for line in plan.summary().lines():
        click.echo(f"  {line}")


def register_campaign(store, campaign: Campaign, plan) -> str:
    """Store the submitted spec and plan (orchestrator/campaigns.py): "new", "same" (a resume)
    or "extended" (a superset spec); a spec that changes existing cells is refused."""
    from orchestrator.campaigns import SpecChanged, register

    try:
        return register(store, campaign, plan)
    except SpecChanged as e:
        raise click.ClickException(str(e)) from None


@main.command()
@click.argument("campaign", type=click.Path(dir_okay=False))
@store_option
@click.option("--address", default=None, help="Ray cluster to run on: 'auto' or HOST:PORT (default: embedded local Ray).")
@click.option("--max-concurrent", type=click.IntRange(min=1), default=None, help="At most this many trials at once.")
@max_cells_option
@click.option("--report/--no-report", default=True, show_default=True,
              help="After the run, write reports/<campaign>/ and print the rewind-vs-reinit verdict table.")
@click.option("--recompute", "recompute", multiple=True, metavar="UNIT_ID|STAGE",
              help="Train these units of the campaign again (a unit id, or dense / trajectory / branch for all of "
                   "a stage), with the units that depend on them; their old rows are replaced in one commit. "
                   "Repeatable.")
def run(campaign: str, store: str, address: str | None, max_concurrent: int | None, max_cells: int | None,
        report: bool, recompute: tuple[str, ...]) -> None:
    """Run (or resume) CAMPAIGN.yaml: only units not finished in the store (in any campaign) are trained."""
    from orchestrator.plan import make_plan
    from orchestrator.store import Store

    c = _load(campaign, max_cells=max_cells)
    try:
        check_store_writable(store)
    except SpecError as e:
        raise click.ClickException(str(e)) from None
    plan = make_plan(c)
    st = Store(store)
    from orchestrator import recompute as forgetting

    try:
        forgotten = forgetting.targets(plan, recompute)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    from orchestrator.execution import run_plan
    from orchestrator.lease import LeaseHeld, acquire
    from orchestrator.status import driver_finished, driver_started

    try:  # one driver per campaign (orchestrator/lease.py): a second `lth run` refuses
        lease = acquire(st, c.name)
    except LeaseHeld as e:
        raise click.ClickException(str(e)) from None
    try:  # under the lease: extending a campaign rewrites the plan its driver runs
        how = register_campaign(st, c, plan)
        forgetting.forget(st, plan, forgotten)
    except BaseException:
        lease.release()
        raise
    click.echo(f"campaign {c.name} -> {st.uri}" + (" (extended: only new units run)" if how == "extended" else "")
               + ": " + "; ".join(plan.summary().lines()), err=True)
    if forgotten:
        click.echo(f"recomputing {len(forgotten)} unit(s): {', '.join(forgotten)}", err=True)
    # lets `lth status` tell a live driver's "running" units from a killed driver's leftovers
    driver = driver_started(st, c.name)
    outcome = "error"
    try:
        summary = run_plan(c, plan, st, address=address, max_concurrent=max_concurrent, lease=lease)
        outcome = "completed" if not summary.cells.get("pending") else "incomplete"
    finally:
        driver_finished(st, c.name, driver, outcome)
        lease.release()
    click.echo(summary.line())
    if report and summary.cells.get("done"):
        from analysis.cli import write_and_print_report

        write_and_print_report(st, c.name, None)
    if summary.cells.get("failed"):
        sys.exit(1)


@main.command()
@click.argument("campaign", required=False)
@store_option
def status(campaign: str | None, store: str) -> None:
    """Done / running / interrupted / failed / diverged / pending per campaign, failed and
    diverged cells with their reasons, and store files readers skip (read from the store, no Ray)."""
    from orchestrator.status import bad_files, campaign_status, read_plan
    from orchestrator.store import Store

    if "://" not in store and not os.path.isdir(store):
        raise click.ClickException(f"store {store!r}: no such directory")
    st = Store(store)
    names = [campaign] if campaign else st.campaigns()
    if not names:
        click.echo(f"no campaigns in {st.uri}")
    bad = []
    for name in names:
        plan = read_plan(st, name)
        if plan is None:
            raise click.ClickException(f"campaign {name!r}: not in store {st.uri}")
        result = campaign_status(st, name, plan)
        for line in result.lines():
            click.echo(line)
        bad += result.bad
    for b in bad + bad_files(st, campaign):
        click.echo(f"bad file {b.path}: {b.reason}")


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@main.command()
@click.argument("campaign")
@store_option
@click.option("--dry-run", is_flag=True, help="List what would be removed, with sizes; remove nothing.")
@click.option("--keep-weights", is_flag=True, help="Keep _artifacts/ (dense weights, per-level masks and weights).")
def gc(campaign: str, store: str, dry_run: bool, keep_weights: bool) -> None:
    """Remove what finished CAMPAIGN no longer needs for resume: Ray Tune's experiment
    directories, leftover staging files and checkpoints, and (without --keep-weights) the
    weights and masks under _artifacts/ that no unfinished unit of any campaign loads. The
    tables are never touched. Refused while the campaign has units to run or rows to commit."""
    from orchestrator.garbage import NotFinished, collect_and_remove
    from orchestrator.lease import LeaseHeld
    from orchestrator.store import Store

    if "://" not in store and not os.path.isdir(store):
        raise click.ClickException(f"store {store!r}: no such directory")
    st = Store(store)
    try:
        items = collect_and_remove(st, campaign, keep_weights=keep_weights, dry_run=dry_run)
    except (NotFinished, LeaseHeld) as e:
        raise click.ClickException(str(e)) from None
    for g in items:
        click.echo(f"{_human(g.bytes):>10}  {g.path}  ({g.what})")
    total = _human(sum(g.bytes for g in items))
    verb = "would free" if dry_run else "freed"
    click.echo(f"{campaign}: {len(items)} item(s), {verb} {total}" + (" (dry run)" if dry_run else ""))
