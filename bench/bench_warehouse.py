"""A bank in PostgreSQL against the same bank in Parquet: `data_gen.py --out postgresql://...` loads N customers
into a real server (Debian's, started as the tests start it), then `model.py score` scores them from PostgreSQL and
from the same bank's partitioned Parquet, each on a LocalCluster of 2 workers; reading alone; and 100,000 scores
written back. Prints customers/s of each and their ratio (target at least 0.5x), reading in transactions/s (at
least 2 million/s), every process's peak memory with the server's (at most 2 GB each), and the write-back's time
(under 10 s).

    python bench/bench_warehouse.py [--customers 100000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import ROOT, verdict
from processes import TreeSampler, mb, run

from clv.batch.sinks import RunStamp, write_scores_table
from clv.data.layout import open_bank
from clv.data.location import WarehouseURL
from tests.postgres import PostgresServer

PART_CUSTOMERS = 25_000


def read_parts(args: tuple[WarehouseURL, str, list[str], tuple]) -> tuple[int, float]:
    """Read some parts of an opened bank in this process (Arrow in the contract's types): their transactions, and
    the seconds the reads took (the process's start and imports left out)."""
    from clv.data.warehouse import WarehouseBank

    url, snapshot, parts, state = args
    bank = WarehouseBank(url, snapshot, *state)
    started = time.perf_counter()
    rows = sum(bank.read(part)["transactions"].num_rows for part in parts)
    return rows, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    options = parser.parse_args()
    n = options.customers
    partitions = max(2, math.ceil(n / PART_CUSTOMERS))
    flags = ["--customers", n, "--partitions", partitions, "--workers", 2, "--quiet"]
    print(f"warehouse benchmark: {n:,} customers, {partitions} partitions, 2 workers, {dt.date.today()}")
    server = PostgresServer()
    try:
        postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
        with TreeSampler(postmaster) as database, tempfile.TemporaryDirectory(prefix="bench-wh-") as folder:
            tmp = Path(folder)
            url = server.url(schema="bank")
            steps = [
                run(
                    "load into PostgreSQL (data_gen.py --out postgresql://)", ["data_gen.py", "--out", url, *flags], tmp
                ),
                run(
                    "the same bank as Parquet",
                    ["data_gen.py", "--out", tmp / "parquet", "--format", "parquet", *flags],
                    tmp,
                ),
                run("a model", ["data_gen.py", "--out", tmp / "small", "--customers", 4000, "--quiet"], tmp),
                run(
                    "train it",
                    ["model.py", "train", "--data-dir", tmp / "small", "--model-dir", tmp / "models", "--quiet"],
                    tmp,
                ),
            ]
            score = ["model.py", "score", "--model-dir", tmp / "models", "--workers", 2, "--quiet"]
            from_pg = run("score from PostgreSQL", [*score, "--data-dir", url, "--output", tmp / "pg.parquet"], tmp)
            from_files = run(
                "score from Parquet", [*score, "--data-dir", tmp / "parquet", "--output", tmp / "files.parquet"], tmp
            )
            for step in [*steps, from_pg, from_files]:
                if not step.ok:
                    print(f"{step.label} failed:\n{step.log[-3000:]}")
                    return 1
            bank = open_bank(url)
            state = (bank.bounds, bank.counts, bank.columns, bank.last_day, bank.fingerprint)
            halves = [bank.parts[0::2], bank.parts[1::2]]
            with ProcessPoolExecutor(2) as pool:  # two readers at once, as two workers read
                done = list(pool.map(read_parts, [(bank.url, bank.snapshot, h, state) for h in halves]))
            transactions, reading = sum(rows for rows, _ in done), max(seconds for _, seconds in done)
            bank.close()
            stamp = RunStamp(dt.date.today(), "bench", "run_bench")
            target = WarehouseURL.parse(server.url(table="marts.clv_scores"))
            started = time.perf_counter()
            written = write_scores_table(target, tmp / "pg.parquet", stamp)
            writing = time.perf_counter() - started
        pg_rate, files_rate = n / from_pg.seconds, n / from_files.seconds
        ratio = pg_rate / files_rate
        read_rate = transactions / reading
        print(f"\nscore from PostgreSQL: {from_pg.seconds:.1f} s, {pg_rate:,.0f} customers/s")
        print(f"score from Parquet:    {from_files.seconds:.1f} s, {files_rate:,.0f} customers/s")
        print(f"ratio {ratio:.2f}x (target at least 0.5x): {verdict(ratio >= 0.5)}")
        print(
            f"reading alone, 2 processes: {transactions:,} transactions in {reading:.1f} s, {read_rate / 1e6:.2f} "
            f"million/s (target at least 2 million/s): {verdict(read_rate >= 2e6)}"
        )
        print(f"writing {written:,} scores back: {writing:.2f} s (target under 10 s): {verdict(writing < 10)}")
        peaks = []
        for step in (from_pg, from_files):
            for role in step.roles():
                peaks.append((f"{step.label}: {role} (x{step.count(role)})", step.peak(role)))
        server_peak = max((p.peak_bytes for p in database.processes()), default=0)
        peaks.append((f"PostgreSQL server (largest of {len(database.processes())} processes)", server_peak))
        print("peak resident memory (target at most 2 GB each):")
        for label, peak in peaks:
            print(f"  {label:60s} {mb(peak):>10s}")
        print(f"  every process at most 2 GB: {verdict(max(p for _, p in peaks) <= 2 * 2**30)}")
        print(f"load into PostgreSQL: {steps[0].seconds:.1f} s; the same bank as Parquet: {steps[1].seconds:.1f} s")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
