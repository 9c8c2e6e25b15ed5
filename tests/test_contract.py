"""The data contract: a broken file is refused before any work, naming file, row, column and rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from clv.data.contract import DataContractError, read_bank
from tests.servers import run_script


@pytest.fixture
def folder(bank_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the small bank (without the oracle)."""
    out = tmp_path / "bank"
    shutil.copytree(bank_dir, out, ignore=shutil.ignore_patterns("oracle_clv.csv"))
    return out


def edit(path: Path, row: int, column: str, value: object) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[row, column] = value
    frame.to_csv(path, index=False)


def refused(folder: Path) -> str:
    with pytest.raises(DataContractError) as caught:
        read_bank(folder)
    return str(caught.value)


def test_the_generated_bank_passes(folder: Path) -> None:
    tables = read_bank(folder)
    assert set(tables) == {"customers", "products", "transactions", "customer_metrics"}
    assert pd.api.types.is_datetime64_any_dtype(tables["transactions"]["transaction_date"])


@pytest.mark.parametrize(
    ("table", "column", "value", "rule"),
    [
        ("transactions", "transaction_date", "2024-13-01", "is not a date (YYYY-MM-DD)"),
        ("transactions", "amount", "twelve", "is not a finite number"),
        ("customers", "join_date", "yesterday", "is not a date (YYYY-MM-DD)"),
        ("customer_metrics", "month", "2024-1", "is not a month (YYYY-MM)"),
        ("products", "customer_id", "999999", "is not in customers"),
        ("transactions", "customer_id", "999999", "is not in customers"),
        ("customer_metrics", "customer_id", "999999", "is not in customers"),
    ],
)
def test_a_broken_value_names_file_row_column_and_rule(
    folder: Path, table: str, column: str, value: str, rule: str
) -> None:
    edit(folder / f"{table}.csv", 41, column, value)
    message = refused(folder)
    assert f"{table}.csv" in message
    assert f"column '{column}' row 42:" in message
    assert f"'{value}'" in message and rule in message


def test_a_missing_required_column_is_named(folder: Path) -> None:
    frame = pd.read_csv(folder / "transactions.csv").drop(columns=["amount"])
    frame.to_csv(folder / "transactions.csv", index=False)
    assert "transactions.csv: missing required column 'amount'" in refused(folder)


def test_a_missing_transactions_file_is_named(folder: Path) -> None:
    (folder / "transactions.csv").unlink()
    assert "missing transactions.csv (or transactions.parquet)" in refused(folder)


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("customers", ["customer_id"]),
        ("products", ["product_id"]),
        ("transactions", ["transaction_id"]),
        ("customer_metrics", ["customer_id", "month"]),
    ],
)
def test_a_duplicate_key_is_refused_naming_file_rows_and_key(folder: Path, table: str, key: list[str]) -> None:
    """A repeated ledger month would double that month's margin in the label; a repeated id, a row."""
    path = folder / f"{table}.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[7, key] = frame.loc[3, key].to_numpy()
    frame.to_csv(path, index=False)
    message = refused(folder)
    named = ", ".join(f"{column} '{frame.loc[3, column]}'" for column in key)
    assert f"{table}.csv: rows 4 and 8 have the same {named}: a duplicate key" in message, message


def test_dates_after_the_data_are_refused(folder: Path) -> None:
    edit(folder / "products.csv", 5, "start_date", "2031-01-01")
    message = refused(folder)
    assert "products.csv: column 'start_date' row 6: '2031-01-01' is after the data's last date" in message


def test_extra_columns_and_unseen_categories_are_warned_not_fatal(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frame = pd.read_csv(folder / "customers.csv", dtype=str, keep_default_na=False)
    frame["segment"] = "gold"
    frame.loc[0, "region"] = "Central"
    frame.to_csv(folder / "customers.csv", index=False)
    tables = read_bank(folder)
    assert "segment" not in tables["customers"]
    assert "ignoring columns not in the contract: segment" in caplog.text
    assert "Central" in caplog.text


@pytest.mark.parametrize(("extra", "held"), [(True, True), (True, False), (False, False)])
def test_a_parquet_category_outside_the_members_is_warned_of_when_a_row_holds_it(
    folder: Path, caplog: pytest.LogCaptureFixture, extra: bool, held: bool
) -> None:
    """A dictionary column whose labels are all members needs no pass over its rows, and warns of nothing; a label
    that is not one (a category pandas kept though no row holds it) is warned of only when a row holds it."""
    frame = pd.read_csv(folder / "transactions.csv", parse_dates=["transaction_date"])
    labels = [*frame["channel"].dropna().unique(), *(["Carrier pigeon"] if extra else [])]
    if held:
        frame.loc[41, "channel"] = "Carrier pigeon"
    frame["channel"] = pd.Categorical(frame["channel"], categories=labels)
    (folder / "transactions.csv").unlink()
    frame.to_parquet(folder / "transactions.parquet")
    tables = read_bank(folder)
    assert ("scored as unknown" in caplog.text) is held
    assert (tables["transactions"]["channel"] == "Carrier pigeon").sum() == int(held)


def test_parquet_is_read_like_csv(folder: Path) -> None:
    frame = pd.read_csv(folder / "transactions.csv", parse_dates=["transaction_date"])
    (folder / "transactions.csv").unlink()
    frame.to_parquet(folder / "transactions.parquet")
    tables = read_bank(folder)
    assert len(tables["transactions"]) == len(frame)


@pytest.mark.parametrize(
    ("table", "column", "value", "rule"),
    [
        ("transactions", "amount", float("inf"), "is not a finite number"),
        ("transactions", "amount", None, "is empty but required"),
        ("transactions", "customer_id", None, "is empty but required"),
        ("products", "start_date", None, "is empty but required"),
        ("customer_metrics", "month", "2024-1", "is not a month (YYYY-MM)"),
    ],
)
def test_a_typed_parquet_file_is_checked_as_a_csv_is(
    folder: Path, table: str, column: str, value: object, rule: str
) -> None:
    """Parquet columns that keep their rule by type skip the row checks; one that breaks it is named by its row."""
    dates = {"transactions": ["transaction_date"], "products": ["start_date", "end_date"]}.get(table, [])
    frame = pd.read_csv(folder / f"{table}.csv", parse_dates=dates)
    for name in dates:
        frame[name] = frame[name].dt.date  # a Parquet date, as the generator writes it
    frame[column] = frame[column].astype(object)
    frame.loc[41, column] = value
    if column == "month":
        frame[column] = frame[column].astype("category")  # a dictionary column, whose labels are checked once
    (folder / f"{table}.csv").unlink()
    frame.to_parquet(folder / f"{table}.parquet")
    message = refused(folder)
    assert f"{table}.parquet: column '{column}' row 42:" in message, message
    assert rule in message


def test_the_cli_refuses_before_work_and_writes_nothing(folder: Path, model_dir: Path, tmp_path: Path) -> None:
    edit(folder / "transactions.csv", 9, "amount", "n.a.")
    output = tmp_path / "predictions.csv"
    run = run_script("model.py", "score", "--data-dir", folder, "--model-dir", model_dir, "--output", output)
    assert run.returncode == 2
    assert "transactions.csv: column 'amount' row 10: 'n.a.' is not a finite number" in run.stderr
    assert not output.exists()
    assert not list(tmp_path.glob(".predictions*"))
