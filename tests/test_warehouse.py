"""A bank in a real PostgreSQL server (Debian's, started by tests/postgres.py, password authentication): the
commands read it as they read files, from one snapshot, refuse its bad rows by key and never show its password."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from clv.batch.scoring import score_bank
from clv.common.cluster import LocalRunner
from clv.data.contract import DataContractError
from clv.data.layout import open_bank, partition_of
from clv.data.location import WarehouseURL, mask, parse_location
from clv.data.prepare import export
from clv.model import artifacts
from tests.conftest import ROOT, SMALL_BANK
from tests.postgres import SCHEMA, PostgresServer, copy_schema, one_line, score
from tests.servers import free_port, run_script


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


# a change that breaks the bank, and the words that name where: a bad value is found as a part loads, a missing
# table as the bank opens
BAD_VALUE = (
    "UPDATE bad.transactions SET amount = 'NaN' WHERE transaction_id = 57",
    "table bad.transactions: column 'amount' at transaction_id 57: 'NaN' is not a finite number",
)
NO_TABLE = ("DROP TABLE bad.transactions", "no table bad.transactions")
SPOILS = [
    BAD_VALUE,
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
    NO_TABLE,
    ("ALTER TABLE bad.transactions DROP COLUMN amount", "table bad.transactions has no column 'amount'"),
]


@pytest.mark.parametrize(("spoil", "expected"), SPOILS)
def test_a_bad_row_or_table_is_named_by_its_key(pg: PostgresServer, pg_bank: str, spoil: str, expected: str) -> None:
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


@pytest.mark.parametrize(("spoil", "expected"), [BAD_VALUE, NO_TABLE])
def test_the_command_refuses_a_bad_bank_in_one_line_and_writes_nothing(
    pg: PostgresServer, pg_bank: str, model_dir: Path, tmp_path: Path, spoil: str, expected: str
) -> None:
    url = copy_schema(pg, "bad")
    pg.execute(spoil)
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


def test_prepare_writes_the_database_snapshot_as_a_partitioned_bank_that_scores_the_same(
    pg_bank: str, model_dir: Path, tmp_path: Path
) -> None:
    in_ranges = f"{pg_bank}&part_customers=300"  # four ranges of customers, each a partition of the files
    manifest = export(open_bank(in_ranges), tmp_path / "bank", LocalRunner())
    assert (manifest.rule, manifest.partitions, manifest.tables["customers"]) == ("range", 4, 1200)
    files, database = open_bank(tmp_path / "bank"), open_bank(in_ranges)
    predictor = artifacts.load(model_dir).predictor
    for part in files.parts:
        expected = score_bank(predictor, database.load(part)[0])
        pd.testing.assert_frame_equal(score_bank(predictor, files.load(part)[0]), expected)
        ids = expected["customer_id"]
        assert (partition_of(ids, 4, "range", manifest.bounds) == files.parts.index(part)).all()
    database.close()
    done = run_script("model.py", "prepare", pg_bank, "--out", tmp_path / "cli", "--partitions", "3")
    assert done.returncode == 2 and "--partitions 3: a database's bank is written in the ranges" in done.stderr
    assert not (tmp_path / "cli").exists()
    done = run_script("model.py", "prepare", pg_bank, "--out", tmp_path / "cli", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "cli: 1 partitions, customer_metrics" in done.stdout and open_bank(tmp_path / "cli").parts == ["part-00000"]
