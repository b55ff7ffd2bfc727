"""What users wait for on a store of 10,000 and 100,000 trials in the layout ``lth run`` produces.

The stores are built by ``benchmarks/real_store.py`` (cached in ``--workdir``): 10 and 100
finished campaigns of 1,024 trials each, written by the real writer (stage -> Committer ->
compact), once compacted as every finished ``lth run`` leaves them ("after") and once with each
campaign's per-batch files ("before": what a run leaves before its final compaction). Per store,
side by side (best of ``--repeat`` wall times, seconds):

* ``lth status`` as a subprocess (what a user types), for the whole store and for one campaign;
* the README's five SQL examples (read from README.md, section "Your own SQL"), each through
  ``lth sql`` as a subprocess, in-process through ``analysis.connect`` (connect + query), and
  through plain DuckDB over the same files (``read_parquet('<store>/<table>/campaign=*/*.parquet',
  hive_partitioning=true)`` views, the ``cell_*`` views defined the same way; no lth code on the
  read path);
* ``lth report bench-000``: seconds until the verdict table is printed (before any figure is drawn).

The last columns give the growth 10k -> 100k (target: at most 10x, i.e. at most linear) and the
table ends with the targets at 10k (<= 2 s: status, the five SQL examples, the verdict table).
``--s3`` also copies the 10k stores into a local S3 server (moto's ``ThreadedMotoServer`` on
127.0.0.1) and runs the same commands against ``s3://`` (``AWS_ENDPOINT_URL`` etc. in the
environment of the subprocesses).

    .venv/bin/python benchmarks/bench_store_scale.py --workdir /tmp/lth-real [--sizes 10 100] [--repeat 3] [--s3]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any directory

from real_store import Params, build, campaign_name, data_files  # noqa: E402 - beside this script
from timing import best_of  # noqa: E402

from analysis.sql import run_sql  # noqa: E402
from analysis.views import CELL_VIEWS, _cell_view_sql, connect  # noqa: E402
from orchestrator import schema  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LIMIT = 2.0  # seconds at 10k trials: the target for status, the SQL examples, the verdict table
LABELS = ["mean best acc", "rewind-reinit", "weight travel", "learning curves", "what ran where"]


def readme_queries() -> list[str]:
    """The ``lth sql "..."`` examples of README.md's "Your own SQL" section, in order."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Your own SQL"):]
    block = section[section.index("```bash"):section.index("```", section.index("```bash") + 3)]
    queries = [" ".join(q.split()) for q in re.findall(r'lth sql "(.*?)"', block, flags=re.S)]
    if len(queries) != 5:
        raise SystemExit(f"README.md 'Your own SQL': expected 5 lth sql examples, found {len(queries)}")
    return queries


def _size(trials: int) -> str:
    return f"{trials // 1000}k" if trials >= 1000 else str(trials)


def lth() -> str:
    return str(Path(sys.executable).with_name("lth"))


TIMEOUT = 1800.0  # seconds per command (--timeout)


def run(argv: list[str], env: dict | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)[:300]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def verdict_seconds(argv: list[str], env: dict | None = None) -> float:
    """Seconds from start until ``lth report`` prints its verdict table's first line."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    first = None
    for line in proc.stdout:
        if first is None and line.startswith("|"):
            first = time.perf_counter() - t0
    if proc.wait(timeout=TIMEOUT) != 0 or first is None:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}) or printed no table")
    return first


def plain_duckdb(root: str, query: str) -> None:
    """The query through DuckDB alone: views over a glob of each table's partitions."""
    con = duckdb.connect()
    for table in schema.TABLES:
        if table in ("nodes", "supermasks"):  # empty in these stores: no files for a glob to find
            continue
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet("
                    f"'{root}/{table}/campaign=*/*.parquet', hive_partitioning=true)")
    for view, table in CELL_VIEWS.items():
        con.execute(_cell_view_sql(view, table))
    con.execute(query).fetchall()


def measure(store: str, queries: list[str], repeat: int, work: Path, env: dict | None = None,
            plain: bool = True) -> dict[str, float]:
    """Best-of-``repeat`` seconds per command / query on ``store`` (``env``: of the subprocesses;
    ``plain``: also plain DuckDB over a local glob)."""
    out: dict[str, float] = {}
    args = ["--store", store]

    def timed(name: str, fn) -> None:  # a failure or timeout is printed and shown as "failed"
        try:
            out[name] = best_of(fn, repeat)
        except (SystemExit, subprocess.TimeoutExpired, Exception) as e:
            out[name] = float("nan")
            print(f"{store}: {name}: failed: {str(e)[:500]}", flush=True)

    # the floor: interpreter start and imports of the commands (no store read)
    timed("floor: lth status --help", lambda: run([lth(), "status", "--help"], env))
    timed("floor: lth sql --help", lambda: run([lth(), "sql", "--help"], env))
    timed("lth status (whole store)", lambda: run([lth(), "status", *args], env))
    timed("lth status bench-000", lambda: run([lth(), "status", campaign_name(0), *args], env))
    for label, q in zip(LABELS, queries, strict=True):
        timed(f"{label}: lth sql", lambda q=q: run([lth(), "sql", q, *args], env))
        timed(f"{label}: connect+query", lambda q=q: run_sql(connect(store, warn=False), q))
        if plain:
            timed(f"{label}: plain DuckDB", lambda q=q: plain_duckdb(store, q))
    report = ["report", campaign_name(0), *args, "--out", str(work / "report")]
    timed("lth report: verdict table", lambda: verdict_seconds([lth(), *report], env))
    return out


def s3_copy(local: Path, bucket: str, prefix: str, endpoint: str) -> str:
    """Upload the local store to ``s3://bucket/prefix`` on the S3 server; returns the URI."""
    import pyarrow.fs as pafs

    s3 = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", access_key="testing",
                           secret_key="testing", region="us-east-1")
    pafs.copy_files(str(local), f"{bucket}/{prefix}", source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=s3, use_threads=True)
    return f"s3://{bucket}/{prefix}"


def main() -> None:
    global TIMEOUT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, help="stores cached here (built on first use)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100], help="campaigns of 1,024 trials per store")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=Params.batch, help="units per commit of each campaign")
    ap.add_argument("--seeds", type=int, default=Params.seeds, help="seeds per campaign (32: 1,024 trials)")
    ap.add_argument("--s3", action="store_true", help="also on a local moto S3 server (smallest size)")
    ap.add_argument("--s3-only", action="store_true", help="with --s3: skip the local measurements; S3 only for the compacted store")
    ap.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds per command before it counts as failed")
    args = ap.parse_args()
    TIMEOUT = args.timeout
    p = Params(seeds=args.seeds, batch=args.batch)
    work = Path(args.workdir).resolve()
    os.environ["LTH_FIGURE_CACHE"] = str(work / "figure-cache")  # not the user's; inherited by `lth`
    queries = readme_queries()
    stores, cols = {}, []
    for n in args.sizes:
        for compact in (False, True):
            t0 = time.perf_counter()
            b = build(work, n, p, compact=compact)
            col = f"{_size(b.trials)} {'after' if compact else 'before'}"
            stores[col] = b
            cols.append(col)
            print(f"{col}: {b.root} ({b.campaigns} campaigns, {b.trials:,} trials, {data_files(b.root):,} data "
                  f"files); built in {b.seconds:.0f} s (cached: {time.perf_counter() - t0:.0f} s now)", flush=True)
    # warm the figure cache: the verdict timing does not depend on it, the total does
    run([lth(), "report", campaign_name(0), "--store", str(stores[cols[-1]].root), "--out", str(work / "report")])
    results = {}
    for col in [] if args.s3_only else cols:
        results[col] = measure(str(stores[col].root), queries, args.repeat, work)
        print(f"measured {col}", flush=True)
    if args.s3:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"127.0.0.1:{port}"
        env = {**os.environ, "AWS_ENDPOINT_URL": f"http://{endpoint}", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}
        import boto3

        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket="lth")
        try:
            smallest = [c for c in cols if c.startswith(cols[0].split()[0])]
            for col in [c for c in smallest if c.endswith("after")] if args.s3_only else smallest:
                t0 = time.perf_counter()
                uri = s3_copy(stores[col].root, "lth", col.replace(" ", "-"), endpoint)
                print(f"{col}: uploaded to {uri} in {time.perf_counter() - t0:.0f} s", flush=True)
                s3col = f"{col} S3"
                saved = dict(os.environ)
                os.environ.update(env)  # for the in-process reads (connect) as for the subprocesses
                try:
                    results[s3col] = measure(uri, queries, args.repeat, work, env=env, plain=False)
                    cols.append(s3col)
                finally:
                    os.environ.clear()
                    os.environ.update(saved)
        finally:
            server.stop()
    cols = [c for c in cols if c in results]
    print()
    print(f"best of {args.repeat}, seconds; 'before'/'after': the campaigns' per-batch files / compacted")
    sizes = list(dict.fromkeys(c.split()[0] for c in cols if "S3" not in c))
    growth = [(f"{sizes[0]}->{sizes[-1]} {v}", f"{sizes[0]} {v}", f"{sizes[-1]} {v}")
              for v in ("before", "after") if len(sizes) > 1]
    header = f"{'measurement':34s}" + "".join(f"{c:>14s}" for c in cols) + "".join(f"{g[0]:>18s}" for g in growth)
    print(header)
    for row in results[cols[0]]:
        line = f"{row:34s}" + "".join(f"{results[c][row]:14.2f}" if row in results[c] else f"{'-':>14s}" for c in cols)
        for _, a, b in growth:
            line += f"{results[b][row] / results[a][row]:17.1f}x"
        print(line)
    if not sizes:  # --s3-only
        return
    small = f"{sizes[0]} after"
    print()
    targets = [r for r in results[small] if r.startswith("lth status") or r.endswith(": lth sql")
               or r.endswith("connect+query") or r.startswith("lth report")]
    over = [r for r in targets if not results[small][r] <= LIMIT]  # (a failure is NaN)
    print(f"target <= {LIMIT:g} s at {small}: " + ("met by all " + str(len(targets)) if not over
                                                    else f"OVER: {', '.join(over)}"))
    if growth:
        worst = max((results[b][r] / results[a][r], r, g) for g, a, b in growth for r in results[a]
                    if results[b][r] / results[a][r] == results[b][r] / results[a][r])  # (not NaN)
        print(f"largest growth {worst[2]}: {worst[0]:.1f}x ({worst[1]}); target <= "
              f"{args.sizes[-1] / args.sizes[0]:g}x (trials grow {args.sizes[-1] / args.sizes[0]:g}x)")


if __name__ == "__main__":
    main()
