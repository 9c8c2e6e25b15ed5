"""A bank in a real PostgreSQL server (Debian's, started by tests/postgres.py, password authentication): the
commands read it as they read files, from one snapshot, refuse its bad rows by key and never show its password;
scores go back in one transaction that a killed scoring leaves undone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from clv.data.contract import DataContractError
from clv.data.layout import open_bank
from clv.data.location import WarehouseURL, mask, parse_location
from tests.conftest import ROOT, SMALL_BANK
from tests.postgres import PostgresServer
from tests.servers import free_port, run_script, wait_until

SCHEMA = "bank"


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()


def bank_flags() -> list[str]:
    """data_gen.py's options of conftest's SMALL_BANK (bank_dir): the same bank, into the database."""
    config = SMALL_BANK
    options = {"customers": config.customers, "start-date": config.start, "end-date": config.end, "seed": config.seed}
    return [text for name, value in options.items() for text in (f"--{name}", str(value))]


@pytest.fixture(scope="session")
def pg_bank(pg: PostgresServer) -> str:
    """conftest's small bank, written by `data_gen.py --out postgresql://...?schema=bank`; its URL."""
    url = pg.url(schema=SCHEMA)
    done = run_script("data_gen.py", "--out", url, "--quiet", *bank_flags())
    assert done.returncode == 0, done.stderr
    return url


def copy_schema(pg: PostgresServer, name: str) -> str:
    """The bank copied into schema `name` (for a test to spoil); its URL."""
    statements = [f"DROP SCHEMA IF EXISTS {name} CASCADE", f"CREATE SCHEMA {name}"]
    statements += [
        f"CREATE TABLE {name}.{t} AS SELECT * FROM {SCHEMA}.{t}"
        for t in ("customers", "products", "transactions", "customer_metrics")
    ]
    pg.execute("; ".join(statements))
    return pg.url(schema=name)


def score(data: str | Path, model_dir: Path, output: str | Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_script(
        "model.py",
        "score",
        "--data-dir",
        data,
        "--model-dir",
        model_dir,
        "--output",
        output,
        "--workers",
        "1",
        "--quiet",
        *extra,
    )


def one_line(stderr: str) -> str:
    """The command's one error line (a local cluster may warn before it that the dashboard's port is taken)."""
    errors = [line for line in stderr.splitlines() if line.startswith("model.py ")]
    assert len(errors) == 1 and stderr.strip().endswith(errors[0]), stderr
    return errors[0]


def test_data_gen_writes_the_warehouse_types(pg: PostgresServer, pg_bank: str) -> None:
    kinds = dict(
        ((table, column), kind)
        for table, column, kind in pg.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'bank'"
        )
    )
    assert kinds["transactions", "transaction_id"] == "bigint"
    assert kinds["transactions", "amount"] == "numeric"
    assert kinds["transactions", "transaction_date"] == "date"
    assert kinds["customers", "age"] == "integer"
    assert kinds["customers", "region"] == "text"
    assert kinds["customer_metrics", "month"] == "date"
    assert pg.execute("SELECT count(*) FROM bank.customers")[0][0] == SMALL_BANK.customers


def test_scores_from_postgres_equal_the_files_to_the_cent(
    pg_bank: str, bank_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    from_files = score(bank_dir, model_dir, tmp_path / "files.csv")
    from_pg = score(pg_bank, model_dir, tmp_path / "pg.csv")
    assert from_files.returncode == 0, from_files.stderr
    assert from_pg.returncode == 0, from_pg.stderr
    files, database = pd.read_csv(tmp_path / "files.csv"), pd.read_csv(tmp_path / "pg.csv")
    assert len(database) > 1000
    pd.testing.assert_frame_equal(files, database)  # rounded to cents (and 4 places) by the same one path


def test_training_on_postgres_keeps_the_password_out_of_the_model(
    pg: PostgresServer, pg_bank: str, tmp_path: Path
) -> None:
    done = run_script("model.py", "train", "--data-dir", pg_bank, "--model-dir", tmp_path, "--workers", "1", "--quiet")
    assert done.returncode == 0, done.stderr
    written = "".join(p.read_text(errors="ignore") for p in tmp_path.rglob("*") if p.is_file())
    assert pg.password not in written + done.stdout + done.stderr
    assert "analyst:***@" in written  # the card says which bank, password masked


def test_one_snapshot_hides_rows_committed_while_the_command_reads(pg: PostgresServer, pg_bank: str) -> None:
    url = copy_schema(pg, "live")
    bank = open_bank(url)  # the command's coordinator: its snapshot is taken now
    before = bank.load(bank.parts[0])[0]
    # ETL commits a new customer and moves money while the command runs
    pg.execute(
        "INSERT INTO live.customers (customer_id, age, income) VALUES (999999, 40, 50000); "
        "INSERT INTO live.transactions (transaction_id, customer_id, transaction_date, amount) "
        "VALUES (99999999, 999999, '2024-06-01', 12.5); "
        "UPDATE live.transactions SET amount = amount + 1000"
    )
    after = bank.load(bank.parts[0])[0]  # a later reader, on its own connection
    assert 999999 not in after.customer_id
    assert after.transactions["amount"].sum() == pytest.approx(before.transactions["amount"].sum())
    fresh = open_bank(parse_location(url.replace("schema=live", "schema=live&application_name=fresh")))
    assert 999999 in fresh.load(fresh.parts[0])[0].customer_id  # the next command sees the new data
    bank.close()
    fresh.close()


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        (
            "UPDATE bad.transactions SET amount = 'NaN' WHERE transaction_id = 57",
            "table bad.transactions: column 'amount' at transaction_id 57: 'NaN' is not a finite number",
        ),
        (
            "UPDATE bad.products SET customer_id = NULL WHERE product_id = 11",
            "table bad.products: column 'customer_id' at product_id 11: is empty but required",
        ),
        (
            "INSERT INTO bad.customer_metrics SELECT * FROM bad.customer_metrics WHERE customer_id = 7 LIMIT 1",
            "table bad.customer_metrics: two rows have the same customer_id '7', month",
        ),
        (
            "UPDATE bad.customer_metrics SET month = '2024-02-15' WHERE customer_id = 7 AND month = '2024-02-01'",
            "column 'month' at customer_id 7, month 2024-02-15: '2024-02-15' is not a month (YYYY-MM)",
        ),
        ("DROP TABLE bad.transactions", "no table bad.transactions"),
        ("ALTER TABLE bad.transactions DROP COLUMN amount", "table bad.transactions has no column 'amount'"),
    ],
)
def test_a_bad_row_or_table_is_one_line_naming_it(
    pg: PostgresServer, pg_bank: str, model_dir: Path, tmp_path: Path, spoil: str, expected: str
) -> None:
    url = copy_schema(pg, "bad")
    pg.execute(spoil)
    bank = None
    try:
        with pytest.raises(DataContractError) as caught:
            bank = open_bank(url)
            for part in bank.parts:
                bank.load(part)
    finally:
        if bank is not None:
            bank.close()  # its snapshot's transaction, which the next copy_schema would wait for
    assert expected in str(caught.value)
    done = score(url, model_dir, tmp_path / "scores.csv")
    assert done.returncode == 2
    assert expected in one_line(done.stderr), done.stderr
    assert pg.password not in done.stderr and "analyst:***@" in done.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_errors_name_the_server_and_never_the_password(pg: PostgresServer, model_dir: Path, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    unreachable = f"postgresql://analyst:{pg.password}@127.0.0.1:{port}/bank"
    started = time.monotonic()
    done = score(unreachable, model_dir, tmp_path / "s.csv")
    assert time.monotonic() - started < 30
    assert done.returncode == 2 and f"127.0.0.1:{port}" in done.stderr, done.stderr
    assert pg.password not in done.stderr and one_line(done.stderr)
    wrong = pg.url().replace(pg.password, "not-the-password")
    done = score(wrong, model_dir, tmp_path / "s.csv")
    assert done.returncode == 2 and "password authentication failed" in done.stderr
    assert "not-the-password" not in done.stderr
    assert str(WarehouseURL.parse(pg.url())) == pg.url().replace(pg.password, "***")
    assert pg.password not in mask(f"at {pg.url()}: refused") and pg.password not in repr(WarehouseURL.parse(pg.url()))


def test_the_password_may_come_from_pgpassword(pg: PostgresServer, pg_bank: str, model_dir: Path, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLV_")} | {"PGPASSWORD": pg.password}
    url = pg.url(password=False, schema=SCHEMA, sslmode="disable")
    done = subprocess.run(
        [
            sys.executable,
            "model.py",
            "score",
            "--data-dir",
            url,
            "--model-dir",
            model_dir,
            "--output",
            tmp_path / "s.csv",
            "--workers",
            "1",
            "--quiet",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert len(pd.read_csv(tmp_path / "s.csv")) > 1000


def test_urls_of_other_schemes_and_missing_folders_are_refused(model_dir: Path, tmp_path: Path) -> None:
    for bad in ("mysql://analyst:hunter2@db/bank", "s3://bucket/bank"):
        done = subprocess.run(
            [
                sys.executable,
                str(ROOT / "model.py"),
                "score",
                "--data-dir",
                bad,
                "--model-dir",
                model_dir,
                "--output",
                "out.csv",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2 and "--data-dir" in done.stderr, done.stderr
        assert "hunter2" not in done.stderr
        made = subprocess.run(
            [sys.executable, str(ROOT / "data_gen.py"), "--out", bad, "--customers", "10"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 2 and "hunter2" not in made.stderr, made.stderr
    assert not list(tmp_path.iterdir())  # no folder named mysql: or s3:
    done = score(tmp_path / "missing", model_dir, tmp_path / "s.csv")
    assert done.returncode == 2 and f"--data-dir {tmp_path / 'missing'}: no such folder" in done.stderr


def scores_in(pg: PostgresServer, table: str) -> pd.DataFrame:
    rows = pg.execute(f"SELECT customer_id, predicted_clv::text, as_of::text, model_version, run_id FROM {table}")
    return pd.DataFrame(rows, columns=["customer_id", "predicted_clv", "as_of", "model_version", "run_id"])


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
