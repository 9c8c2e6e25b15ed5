"""Scores back into a real PostgreSQL server (tests/postgres.py): in one transaction that a killed scoring leaves
undone; and a bank read in parts by a real Dask cluster from one snapshot."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from clv.data.layout import open_bank
from tests.conftest import ROOT
from tests.postgres import PostgresServer, score, scores_in
from tests.servers import run_script, wait_until


def test_scores_go_back_in_one_transaction(pg: PostgresServer, pg_bank: str, model_dir: Path, tmp_path: Path) -> None:
    target = pg.url(table="marts.clv_scores")
    first = score(pg_bank, model_dir, target, "--portfolio-table", "marts.clv_portfolio", "--scores-dir", tmp_path)
    assert first.returncode == 0, first.stderr
    once = scores_in(pg, "marts.clv_scores").sort_values("customer_id", ignore_index=True)
    files = score(pg_bank, model_dir, tmp_path / "s.csv")
    expected = pd.read_csv(tmp_path / "s.csv")
    assert once["customer_id"].tolist() == expected["customer_id"].tolist()
    assert [float(v) for v in once["predicted_clv"]] == expected["predicted_clv"].tolist()
    assert files.returncode == 0 and once["run_id"].nunique() == 1

    seen: list[tuple] = []
    stop = threading.Event()

    def read() -> None:  # a reader all along: the whole old table or the whole new one, never half
        while not stop.is_set():
            seen.append(pg.execute("SELECT count(*), count(DISTINCT run_id) FROM marts.clv_scores")[0])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        again = score(pg_bank, model_dir, target, "--portfolio-table", "marts.clv_portfolio", "--scores-dir", tmp_path)
    finally:
        stop.set()
        reader.join()
    assert again.returncode == 0, again.stderr
    assert set(seen) == {(len(once), 1)}
    twice = scores_in(pg, "marts.clv_scores").sort_values("customer_id", ignore_index=True)
    pd.testing.assert_frame_equal(once, twice)  # the same scoring twice leaves the same rows
    runs = pg.execute("SELECT run_id, customers, (portfolio->>'customers')::int FROM marts.clv_portfolio")
    assert runs == [(once["run_id"][0], len(once), len(once))]
    assert not list(tmp_path.glob(".warehouse-*"))  # the parts' folder is gone


def test_a_scoring_killed_halfway_leaves_the_old_table(
    pg: PostgresServer, pg_bank: str, model_dir: Path, tmp_path: Path
) -> None:
    target = pg.url(table="marts.killed")
    assert score(pg_bank, model_dir, target, "--scores-dir", tmp_path).returncode == 0
    pg.execute("UPDATE marts.killed SET model_version = 'old'")
    old = scores_in(pg, "marts.killed")
    import adbc_driver_postgresql.dbapi as driver

    holder = driver.connect(pg.url(), autocommit=False)  # holds the table so that the swap waits, halfway
    cursor = holder.cursor()
    cursor.execute("LOCK TABLE marts.killed IN SHARE MODE")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CLV_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "model.py",
            "score",
            "--data-dir",
            pg_bank,
            "--model-dir",
            model_dir,
            "--output",
            target,
            "--scores-dir",
            tmp_path,
            "--workers",
            "1",
            "--quiet",
        ],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        waiting = "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE%'"
        wait_until(lambda: len(pg.execute(waiting)) == 1, "the scoring waits to swap its rows", timeout=180)
        [(session,)] = pg.execute(waiting)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        holder.rollback()
        holder.close()
    # the server ends the session when it finds its client gone; its staging table (a temporary one) dies with it
    alive = f"SELECT count(*) FROM pg_stat_activity WHERE pid = {int(session)}"
    wait_until(lambda: pg.execute(alive)[0][0] == 0, "the killed scoring's session ends", timeout=60)
    pd.testing.assert_frame_equal(scores_in(pg, "marts.killed"), old)


@pytest.mark.cluster
def test_a_dask_cluster_reads_the_bank_in_parts_from_one_snapshot(
    pg: PostgresServer, pg_bank: str, bank_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    from tests.test_cluster import DaskCluster

    in_parts = f"{pg_bank}&part_customers=300"  # four ranges of customers, read by two worker processes
    assert len(open_bank(in_parts).parts) == 4
    cluster = DaskCluster(tmp_path / "dask")
    try:
        cluster.wait_for_workers(2)
        done = run_script(
            "model.py",
            "score",
            "--data-dir",
            in_parts,
            "--model-dir",
            model_dir,
            "--output",
            tmp_path / "pg.csv",
            "--scheduler",
            cluster.address,
            "--quiet",
        )
        assert done.returncode == 0, done.stderr + cluster.logs()
    finally:
        cluster.stop()
    assert pg.password not in cluster.logs()
    files = score(bank_dir, model_dir, tmp_path / "files.csv")
    assert files.returncode == 0, files.stderr
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "files.csv"), pd.read_csv(tmp_path / "pg.csv"))
