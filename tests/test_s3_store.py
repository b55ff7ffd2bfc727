"""An ``s3://`` store for real: moto's S3 server over HTTP on loopback (tests/s3_server.py),
a real local Ray whose workers write to it, real Delta commits through delta-rs.

The environment is the one the README documents (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_REGION, AWS_ENDPOINT_URL), set before this module's Ray starts so its workers see it,
as every node of a cluster must. The same campaign also runs on a local store: the S3 store
must hold the same rows (all four tables, without the columns that measure the run), and
``lth status``, ``lth sql`` and ``lth report`` must print the same as on the local store.
A driver SIGKILLed at commit and compaction kill points (orchestrator/faults.py), then run
again, must end with the same rows, none duplicated. Fast (no Ray): bad S3 settings are refused
in one line naming the setting, and the lease's object-store variant holds.
"""

from __future__ import annotations

import os
import posixpath
import signal
from pathlib import Path

import duckdb
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pytest
from click.testing import CliRunner
from s3_server import s3_server
from test_faults import CAMPAIGN as FAULTS_CAMPAIGN
from test_faults import NAME, TABLES, VOLATILE, finish, lth, start_driver

from orchestrator import paths
from orchestrator.cli import main
from orchestrator.plan import make_plan
from orchestrator.spec import parse_campaign

pytestmark = pytest.mark.timeout(600)

# test_faults' one-family campaign (three units, one per stage) with fewer epochs: no kill here
# has to land inside a training, and this module runs it three times (local, S3, killed and rerun).
CAMPAIGN = FAULTS_CAMPAIGN.replace("epochs: 8,", "epochs: 3,")
assert CAMPAIGN != FAULTS_CAMPAIGN


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def ray_address(s3, local_ray):
    """This module's Ray, started after the S3 variables are set (``s3`` comes first): the raylet
    and every worker inherit them, as `ray start` on a cluster node must have them."""
    return local_ray


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "faults.yaml"
    path.write_text(CAMPAIGN)
    return path


@pytest.fixture(scope="module")
def local_store(ray_address, spec, tmp_path_factory) -> str:
    store = str(tmp_path_factory.mktemp("local") / "store")
    lth(["run", str(spec), "--store", store, "--no-report"])
    return store


@pytest.fixture(scope="module")
def s3_store(ray_address, s3, spec) -> str:
    uri = s3.uri("e2e")
    lth(["run", str(spec), "--store", uri, "--no-report"])
    return uri


def table_rows(store: str, table: str) -> list[tuple]:
    """Every row of ``table`` minus the volatile columns, sorted, read by a plain client: pyarrow
    (its S3 filesystem configured by the same variables) over every ``*.parquet`` file in the
    table's partition directories. A finished run vacuums, so these are exactly the current
    files; a duplicate or a leftover of a killed commit or compaction would show here."""
    fs, root = pafs.FileSystem.from_uri(store) if "://" in store else (pafs.LocalFileSystem(), store)
    base = posixpath.join(root, paths.table_dir(table))
    found = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    files = sorted(i.path for i in found if i.path.endswith(paths.PARQUET)
                   and posixpath.basename(posixpath.dirname(i.path)).startswith(f"{paths.PARTITION}="))
    data = pads.dataset(files, filesystem=fs, format="parquet", partitioning="hive",
                        partition_base_dir=base).to_table()
    rel = duckdb.from_arrow(data)
    cols = [c for c in rel.columns if c not in VOLATILE]
    return sorted(rel.select(", ".join(cols)).fetchall(), key=repr)


def current_rows(store: str, table: str) -> list[tuple]:
    """Rows of the table's current Delta version, as readers see them mid-campaign (our views)."""
    from analysis.views import connect

    rel = connect(store, warn=False).sql(f"select * from {table}")
    cols = [c for c in rel.columns if c not in VOLATILE]
    return sorted(rel.select(", ".join(cols)).fetchall(), key=repr)


def assert_same_rows(store: str, local_store: str) -> None:
    for table in TABLES:
        got, want = table_rows(store, table), table_rows(local_store, table)
        assert want, f"{table}: the local run wrote no rows"
        assert len(got) == len(set(got)), f"{table}: duplicate rows"
        assert got == want, f"{table}: rows differ from the same campaign on a local store"


@pytest.mark.slow
def test_run_on_s3_equals_local_run(s3_store, local_store):
    assert_same_rows(s3_store, local_store)
    # the store really is in the bucket (nothing fell back to a local directory named s3:)
    assert not Path("s3:").exists()
    fs, root = pafs.FileSystem.from_uri(s3_store)
    assert isinstance(fs, pafs.S3FileSystem)
    for table in TABLES:
        assert fs.get_file_info(posixpath.join(root, table, "_delta_log")).type == pafs.FileType.Directory
    # Tune's experiment state is under the store (a cluster's nodes share it there)
    ray_dir = fs.get_file_info(pafs.FileSelector(posixpath.join(root, paths.ray_storage()), recursive=True))
    assert any(i.type == pafs.FileType.File for i in ray_dir)


# SIGKILLs at points inside commits and the compaction, each followed by the same `lth run`
# that the next point kills; the last run finishes. About one campaign of compute in all.
KILL_POINTS = [
    "commit:table:metrics",  # after the dense stage: metrics committed, levels / masks / trials not
    "compact:optimized:metrics",  # the rerun re-applied that batch, ran the rest; metrics rewritten, not vacuumed
]


@pytest.mark.slow
def test_driver_sigkills_on_s3_then_rerun_equals_uninterrupted(ray_address, s3, spec, local_store):
    store = s3.uri("killed")
    reference = {t: table_rows(local_store, t) for t in TABLES}
    fs, root = pafs.FileSystem.from_uri(store)
    for point in KILL_POINTS:
        proc = start_driver(spec, store, ray_address, point)
        code, out = finish(proc)
        assert code == -signal.SIGKILL, f"driver was not killed at {point} (exit {code}):\n{out[-3000:]}"
        pending = fs.get_file_info(posixpath.join(root, paths.pending_batch(NAME))).type
        # the intent of the batch being committed stays for the next driver; a compaction has none
        assert pending == (pafs.FileType.File if point.startswith("commit:") else pafs.FileType.NotFound), point
        for table in TABLES:
            got = current_rows(store, table)
            assert len(got) == len(set(got)), f"{point}: {table}: duplicate rows"
            assert set(got) <= set(reference[table]), f"{point}: {table}: a row differs from the uninterrupted run"

    out = lth(["run", str(spec), "--store", store, "--no-report"])
    assert "dense 0 ran/1 skipped, trajectory 0 ran/1 skipped, branch 0 ran/1 skipped" in out, out  # none retrained
    assert_same_rows(store, local_store)
    assert fs.get_file_info(posixpath.join(root, paths.pending_batch(NAME))).type == pafs.FileType.NotFound
    staged = fs.get_file_info(pafs.FileSelector(posixpath.join(root, paths.staging_dir(NAME)), recursive=True,
                                                allow_not_found=True))
    assert not [i.path for i in staged if i.path.endswith(paths.PARQUET)]  # committed units' staging deleted


@pytest.mark.slow
def test_status_on_s3(s3_store, local_store):
    plan = make_plan(parse_campaign(CAMPAIGN))
    cells, units = len(plan.cells), len(plan.units)
    got = lth(["status", "--store", s3_store]).splitlines()
    assert got[0] == (f"{NAME}: cells done {cells}, failed 0, diverged 0, pending 0 | "
                      f"units done {units}, running 0, failed 0, diverged 0, pending 0"), got
    assert got[1].startswith("  driver: finished") and "(completed;" in got[1], got
    # the same as on the local store but for the driver line (its pid and times)
    assert got[0] == lth(["status", "--store", local_store]).splitlines()[0]


SQL = [
    "SELECT count(*) AS n FROM metrics",
    "SELECT status, count(*) AS cells FROM trials GROUP BY ALL ORDER BY ALL",
    # the README's rewind minus reinit, paired by seed
    "SELECT r.structure, r.lr, r.level, round(100*avg(r.best_test_accuracy - c.best_test_accuracy),2) AS gain_pts "
    "FROM cell_levels r JOIN cell_levels c USING (campaign, arch, structure, schedule, lr, seed, level) "
    "WHERE r.trial_reset='rewind' AND c.trial_reset='reinit' AND r.level > 0 GROUP BY ALL ORDER BY ALL",
]


@pytest.mark.slow
def test_sql_on_s3(s3_store, local_store):
    metrics = len(table_rows(local_store, "metrics"))
    for query in SQL:
        out = lth(["sql", query, "--store", s3_store, "--format", "csv"])
        assert out == lth(["sql", query, "--store", local_store, "--format", "csv"]), query
    assert lth(["sql", SQL[0], "--store", s3_store, "--format", "csv"]).split() == ["n", str(metrics)]
    prune = parse_campaign(CAMPAIGN).spec.prune.levels
    gains = lth(["sql", SQL[2], "--store", s3_store, "--format", "csv"]).split()
    assert len(gains) == 1 + prune, gains  # header, then one line per pruned level


@pytest.mark.slow
def test_report_on_s3(s3_store, local_store, tmp_path):
    got = lth(["report", NAME, "--store", s3_store, "--out", str(tmp_path / "s3")])
    want = lth(["report", NAME, "--store", local_store, "--out", str(tmp_path / "local")])
    table = [line for line in got.splitlines() if line.startswith("|")]
    assert table[0].startswith("| dataset | arch | structure |") and "verdict (best)" in table[0], got
    assert len(table) == 3 and table[2].startswith("| digits | mlp | unstructured | iterative | 0.05 |"), got
    assert table == [line for line in want.splitlines() if line.startswith("|")]
    assert (tmp_path / "s3" / "report.md").read_text() == (tmp_path / "local" / "report.md").read_text()


def _bad(s3, args: list[str], **env) -> str:
    """Output of an ``lth`` command that must refuse: one ``Error:`` line, no traceback."""
    out = CliRunner().invoke(main, args, env=env)
    assert out.exit_code == 1 and isinstance(out.exception, SystemExit), (out.output, out.exception)
    assert out.output.startswith("Error: "), out.output
    return out.output


def test_bad_s3_settings_are_refused_naming_the_setting(s3):
    store = s3.uri("bad")
    port = s3.endpoint.rsplit(":", 1)[1]
    # without a scheme pyarrow would speak TLS to the plain-HTTP server, failing after its retries
    out = _bad(s3, ["status", "--store", store], AWS_ENDPOINT_URL=f"127.0.0.1:{port}")
    assert f"AWS_ENDPOINT_URL='127.0.0.1:{port}': expected http://HOST:PORT" in out
    out = _bad(s3, ["sql", "SELECT 1", "--store", store], AWS_ENDPOINT_URL_S3="http://127.0.0.1:1")
    assert "AWS_ENDPOINT_URL_S3='http://127.0.0.1:1' differs from AWS_ENDPOINT_URL" in out
    # an endpoint in the URI would reach pyarrow but neither delta-rs nor Ray Tune
    out = _bad(s3, ["status", "--store", f"{store}?endpoint_override=127.0.0.1:{port}&scheme=http"])
    assert "options in the URI are not passed to every client" in out and "AWS_ENDPOINT_URL" in out
    out = _bad(s3, ["status", "--store", "s3://no-such-bucket/x"])
    assert "store s3://no-such-bucket/x: cannot open it:" in out and "no-such-bucket" in out
    assert f"AWS_ENDPOINT_URL={s3.endpoint}" in out  # the settings in effect, to compare with the intended ones


def test_lease_on_s3_refuses_a_second_driver_and_takes_over_a_dead_one(s3):
    """The object-store variant of the lease (write, settle, read back: S3 has no lock)."""
    from test_store_lease import dead_pid, write_lease

    from orchestrator.lease import LeaseHeld, acquire, read
    from orchestrator.store import Store

    store = Store(s3.uri("lease"))
    held = acquire(store, "c")
    try:
        with pytest.raises(LeaseHeld) as e:
            acquire(store, "c")
        assert f"pid {os.getpid()}, since {held.record.since[:19]}" in str(e.value), str(e.value)
    finally:
        held.release()
    assert read(store, "c") is None  # released: the lease object is deleted
    dead = write_lease(store, "c", pid=dead_pid())  # a driver of this host that was SIGKILLed
    taker = acquire(store, "c")
    try:
        assert read(store, "c") == taker.record and taker.record.run_id != dead.run_id
    finally:
        taker.release()
