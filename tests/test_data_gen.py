"""The synthetic bank: deterministic, schema-valid, internally consistent, realistic, and a polite CLI."""

from __future__ import annotations

import csv
import datetime as dt
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from faker import Faker
from pydantic import BaseModel, ValidationError

from clv.data.schema import TABLES, CustomerRecord, LedgerRecord, ProductRecord, TransactionRecord
from clv.synthetic import generator
from clv.synthetic.simulation import MAX_PRODUCTS_PER_CUSTOMER, any_set, row_counts, running_counts, set_cells
from clv.synthetic.tables import display_names
from tests.servers import run_script

TABLE_NAMES = ("customers", "products", "transactions", "customer_metrics")
RECORDS: dict[str, type[BaseModel]] = {
    "customers": CustomerRecord,
    "products": ProductRecord,
    "transactions": TransactionRecord,
    "customer_metrics": LedgerRecord,
}
DATE_COLUMNS = {
    "customers": ["join_date"],
    "products": ["start_date", "end_date"],
    "transactions": ["transaction_date"],
    "oracle_clv": ["as_of"],
}
HORIZON_MONTHS = 12
ANNUAL_RATE = 0.10


def month_index(values: pd.Series) -> pd.Series:
    """'YYYY-MM' labels or timestamps as months since year 0, so that month arithmetic is integer arithmetic."""
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        return values.str[:4].astype(int) * 12 + values.str[5:7].astype(int) - 1
    return values.dt.year * 12 + values.dt.month - 1


def default_as_of(end: dt.date) -> dt.date:
    """The default cutoff (docs/protocol.md): the last month end on or before `end`, minus the horizon."""
    last = end if (end + dt.timedelta(days=1)).day == 1 else end.replace(day=1) - dt.timedelta(days=1)
    month = last.year * 12 + last.month - 1 - HORIZON_MONTHS + 1  # the month after the as-of month
    return dt.date(month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)


def realized_value(tables: dict[str, pd.DataFrame], as_of: dt.date) -> pd.Series:
    """Discounted ledger net margin of the months after as_of, per customer who had joined by as_of."""
    ledger = tables["customer_metrics"]
    t = month_index(ledger["month"]) - (as_of.year * 12 + as_of.month - 1)
    future = ledger[(t >= 1) & (t <= HORIZON_MONTHS)]
    weight = 1.0 / (1.0 + ANNUAL_RATE) ** (t[future.index] / 12.0)
    value = (future["net_margin"] * weight).groupby(future["customer_id"]).sum()
    customers = tables["customers"]
    scored = customers.loc[customers["join_date"] <= pd.Timestamp(as_of), "customer_id"]
    return value.reindex(scored, fill_value=0.0)


def read_tables(folder: Path) -> dict[str, pd.DataFrame]:
    return {
        path.stem: pd.read_csv(path, parse_dates=DATE_COLUMNS.get(path.stem, []))
        for path in sorted(folder.glob("*.csv"))
    }


def to_frames(tables: dict[str, pa.Table]) -> dict[str, pd.DataFrame]:
    frames = {}
    for name, table in tables.items():
        frame = table.to_pandas()
        for column in DATE_COLUMNS.get(name, []):
            frame[column] = pd.to_datetime(frame[column])
        frames[name] = frame
    return frames


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> tuple[generator.Config, Path]:
    """A small bank with its oracle, written to CSV once for the whole module."""
    config = generator.Config(customers=600, seed=7, oracle=True)
    out = tmp_path_factory.mktemp("bank")
    generator.write_tables(generator.simulate(config), out)
    return config, out


@pytest.fixture(scope="module")
def frames(bank: tuple[generator.Config, Path]) -> dict[str, pd.DataFrame]:
    """The small bank's CSV files read back, dates parsed."""
    return read_tables(bank[1])


@pytest.fixture(scope="module")
def big() -> tuple[generator.Config, dict[str, pd.DataFrame]]:
    """A bank large enough for rates and shares to be stable (in memory, not written)."""
    config = generator.Config(customers=3000, seed=11)
    return config, to_frames(generator.simulate(config))


# ---- determinism --------------------------------------------------------------------------------


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    contents = {}
    for label, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / label
        generator.write_tables(generator.simulate(generator.Config(customers=200, seed=seed)), out)
        contents[label] = {path.name: path.read_bytes() for path in sorted(out.iterdir())}
    assert sorted(contents["a"]) == [f"{name}.csv" for name in sorted(TABLE_NAMES)]
    assert contents["a"] == contents["b"]
    assert contents["c"].keys() == contents["a"].keys()
    for name in contents["a"]:
        assert contents["c"][name] != contents["a"][name], f"{name} does not depend on the seed"


@pytest.mark.parametrize("share", [0.0, 0.004, 0.5, 1.0])
def test_the_months_column_by_column_counts_are_numpys_along_the_rows(share: float) -> None:
    """The month's reductions over a customer's product slots (or transaction kinds), done column by column for
    speed, give what numpy gives along the rows, for sparse, dense, empty and full blocks."""
    rng = np.random.default_rng(5)
    for shape in ((0, 6), (1, 6), (2_000, 6), (2_000, 8)):
        cells = rng.random(shape) < share
        counts = rng.poisson(2 * share, shape)
        pairs = [
            (any_set(cells), cells.any(axis=1)),
            (row_counts(cells), cells.sum(axis=1)),
            (row_counts(counts), counts.sum(axis=1)),
            (running_counts(cells), np.cumsum(cells, axis=1)),
            *zip(set_cells(cells), np.nonzero(cells), strict=True),
        ]
        for ours, numpys in pairs:
            assert ours.dtype == numpys.dtype and np.array_equal(ours, numpys), (shape, ours, numpys)


def test_the_display_names_are_those_of_fakers_calls_one_name_at_a_time() -> None:
    """The pool drawn in two calls holds the names of 400 first_name() and 600 last_name() calls: a Faker that
    drew those otherwise would change every bank's names, and shows here first."""
    seq, ids = np.random.SeedSequence(7), np.arange(1, 301)
    names, _ = display_names(ids, seq)
    fake = Faker("en_US")
    fake.seed_instance(int(seq.generate_state(1)[0]))
    first = [fake.first_name() for _ in range(400)]
    last = [fake.last_name() for _ in range(600)]
    rng = np.random.default_rng(seq)
    picked = zip(rng.integers(0, len(first), ids.size), rng.integers(0, len(last), ids.size), strict=True)
    assert names.tolist() == [f"{first[f]} {last[s]}" for f, s in picked]


# ---- schema ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TABLE_NAMES)
def test_csv_header_is_the_schema_contract(bank: tuple[generator.Config, Path], name: str) -> None:
    with (bank[1] / f"{name}.csv").open(newline="") as file:
        header = next(csv.reader(file))
    assert header == [column.name for column in TABLES[name]]


@pytest.mark.parametrize("name", TABLE_NAMES)
def test_every_row_validates_against_its_record_model(bank: tuple[generator.Config, Path], name: str) -> None:
    # read as text so that each field is validated as written (a number as a JSON client would send its text);
    # an empty field is a missing value
    frame = pd.read_csv(bank[1] / f"{name}.csv", dtype=str, keep_default_na=False)
    assert len(frame) > 0
    model = RECORDS[name]
    nullable = {column.name for column in TABLES[name] if column.nullable}
    numeric = {column.name for column in TABLES[name] if column.kind in ("int", "float")}
    for i, row in enumerate(frame.to_dict("records")):
        row = {
            key: None if value == "" else json.loads(value) if key in numeric else value for key, value in row.items()
        }
        missing = [key for key, value in row.items() if value is None and key not in nullable]
        assert not missing, f"{name}.csv row {i + 1}: empty {missing}"
        try:
            model.model_validate(row)
        except ValidationError as exc:
            pytest.fail(f"{name}.csv row {i + 1}: {exc}")


# ---- consistency ----------------------------------------------------------------------------------


def test_references_point_to_existing_rows(frames: dict[str, pd.DataFrame]) -> None:
    customers = frames["customers"]
    products, transactions, ledger = frames["products"], frames["transactions"], frames["customer_metrics"]
    assert customers["customer_id"].is_unique
    assert products["product_id"].is_unique
    assert transactions["transaction_id"].is_unique
    assert not ledger.duplicated(["customer_id", "month"]).any()
    known = set(customers["customer_id"])
    for name in ("products", "transactions", "customer_metrics"):
        orphans = set(frames[name]["customer_id"]) - known
        assert not orphans, f"{name} rows of unknown customers {sorted(orphans)[:5]}"
    owner = products.set_index("product_id")["customer_id"]
    assert transactions["product_id"].isin(owner.index).all()
    mismatched = transactions[owner.reindex(transactions["product_id"]).to_numpy() != transactions["customer_id"]]
    assert mismatched.empty, f"transactions on another customer's product: {mismatched.head()}"


def test_dates_are_inside_the_window_and_the_relationship(
    bank: tuple[generator.Config, Path], frames: dict[str, pd.DataFrame]
) -> None:
    config = bank[0]
    start, end = pd.Timestamp(config.start), pd.Timestamp(config.end)
    customers, products = frames["customers"], frames["products"]
    transactions, ledger = frames["transactions"], frames["customer_metrics"]
    joined = customers.set_index("customer_id")["join_date"]

    assert transactions["transaction_date"].between(start, end).all()
    months = month_index(ledger["month"])
    assert months.between(start.year * 12 + start.month - 1, end.year * 12 + end.month - 1).all()
    assert (months >= month_index(joined.reindex(ledger["customer_id"])).to_numpy()).all(), "ledger before joining"
    assert (joined <= end).all()

    product_join = joined.reindex(products["customer_id"]).to_numpy()
    early = products[products["start_date"] < product_join]
    assert early.empty, f"products opened before their customer joined:\n{early}"
    closed = products.dropna(subset=["end_date"])
    backwards = closed[closed["end_date"] < closed["start_date"]]
    assert backwards.empty, f"products closed before they opened:\n{backwards}"
    assert (closed["end_date"] <= end).all()
    assert (products["start_date"] <= end).all()

    assert (transactions["transaction_date"] >= joined.reindex(transactions["customer_id"]).to_numpy()).all()
    product = products.set_index("product_id").reindex(transactions["product_id"])
    assert (transactions["transaction_date"].to_numpy() >= product["start_date"].to_numpy()).all()
    open_at_end = product["end_date"].isna().to_numpy()
    assert (open_at_end | (transactions["transaction_date"].to_numpy() <= product["end_date"].to_numpy())).all()


def test_no_activity_after_churn(frames: dict[str, pd.DataFrame]) -> None:
    products, transactions, ledger = frames["products"], frames["transactions"], frames["customer_metrics"]
    by_customer = products.groupby("customer_id")["end_date"]
    churned = by_customer.max()[by_customer.count() == by_customer.size()]  # every product has an end date
    assert len(churned) >= 20, "too few churned customers for the test to mean anything"
    assert (products.loc[products["customer_id"].isin(churned.index), "status"] == "Closed").all()

    left = churned.reindex(transactions["customer_id"]).to_numpy()
    late = transactions[transactions["transaction_date"].to_numpy() > left]
    assert late.empty, f"transactions after churn:\n{late}"
    left_month = month_index(churned.reindex(ledger["customer_id"]))
    late = ledger[month_index(ledger["month"]).to_numpy() > left_month.to_numpy()]
    assert late.empty, f"ledger months after churn:\n{late}"


def test_ledger_adds_up(frames: dict[str, pd.DataFrame]) -> None:
    ledger = frames["customer_metrics"]
    parts = ledger["interest_margin"] + ledger["fee_income"] - ledger["cost_to_serve"] - ledger["credit_loss"]
    off = (ledger["net_margin"] - parts).abs()
    assert off.max() <= 0.011, f"net_margin off by {off.max():.4f} on row {off.idxmax()}"
    assert (ledger["net_margin"] != 0).mean() > 0.9


# ---- realism ----------------------------------------------------------------------------------------


def test_annual_churn_is_plausible(big: tuple[generator.Config, dict[str, pd.DataFrame]]) -> None:
    config, frames = big
    by_customer = frames["products"].groupby("customer_id")
    first_open = by_customer["start_date"].min()
    ends = by_customer["end_date"]
    churn_date = ends.max().where(ends.count() == ends.size())  # NaT while any product is open
    first_year = config.start.year + ((config.start.month, config.start.day) != (1, 1))
    years = [year for year in range(first_year, config.end.year + 1) if dt.date(year, 12, 31) <= config.end]
    assert years
    for year in years:
        jan1, dec31 = pd.Timestamp(year, 1, 1), pd.Timestamp(year, 12, 31)
        active = (first_open < jan1) & ~(churn_date < jan1)
        left = active & churn_date.between(jan1, dec31)
        rate = left.sum() / active.sum()
        assert 0.05 <= rate <= 0.20, f"{year}: {left.sum()} of {active.sum()} active customers churned ({rate:.1%})"


def test_future_value_is_skewed_and_sometimes_negative(big: tuple[generator.Config, dict[str, pd.DataFrame]]) -> None:
    config, frames = big
    value = realized_value(frames, default_as_of(config.end)).sort_values(ascending=False).to_numpy()
    assert len(value) > 1000
    negative = (value < 0).mean()
    assert negative > 0.02, f"only {negative:.1%} of customers lose the bank money"
    top, bottom = value[: len(value) // 10].sum(), value[len(value) - len(value) // 2 :].sum()
    assert top > 3 * bottom, f"top decile brings {top:,.0f}, bottom half {bottom:,.0f}"
    # the bottom half nets out near zero, so compare with its gross size too
    gross = np.abs(value[len(value) - len(value) // 2 :]).sum()
    assert top > 3 * gross, f"top decile brings {top:,.0f}, bottom half moves {gross:,.0f}"
    assert value.mean() > 0


def test_every_customer_holds_one_to_five_products(big: tuple[generator.Config, dict[str, pd.DataFrame]]) -> None:
    frames = big[1]
    held = frames["products"].groupby("customer_id").size().reindex(frames["customers"]["customer_id"], fill_value=0)
    assert held.between(1, MAX_PRODUCTS_PER_CUSTOMER).all(), held.value_counts().sort_index()
    assert held.max() > 1 and held.min() == 1


def test_oracle_ranks_the_future_well_but_not_perfectly(
    bank: tuple[generator.Config, Path], frames: dict[str, pd.DataFrame]
) -> None:
    config = bank[0]
    as_of = default_as_of(config.end)
    oracle = frames["oracle_clv"]
    assert (oracle["as_of"] == pd.Timestamp(as_of)).all()
    assert oracle["customer_id"].is_unique
    actual = realized_value(frames, as_of)
    assert sorted(oracle["customer_id"]) == sorted(actual.index), "oracle scores another set of customers"
    expected = oracle.set_index("customer_id")["expected_clv"].reindex(actual.index)
    rho = expected.corr(actual, method="spearman")
    assert rho > 0.7, f"oracle Spearman {rho:.3f}"
    gap = (expected - actual).abs().mean()
    assert gap > 1, f"oracle is the realized value itself (mean gap {gap:.2f})"


# ---- command line -------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_script("data_gen.py", *args)


@pytest.mark.parametrize(
    ("option", "args"),
    [
        ("--customers", ["--customers", "0"]),
        ("--end-date", ["--customers", "50", "--start-date", "2023-06-01", "--end-date", "2023-01-31"]),
        ("--start-date", ["--customers", "50", "--start-date", "2024-13-01"]),
        ("--memory-limit", ["--customers", "50", "--partitions", "2", "--memory-limit", "lots"]),
    ],
)
def test_bad_option_is_one_line_and_exit_2(tmp_path: Path, option: str, args: list[str]) -> None:
    out = tmp_path / "out"
    result = run_cli(*args, "--out", str(out))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert option in lines[0]
    assert not out.exists(), sorted(out.iterdir())


def test_unwritable_out_is_one_line_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    result = run_cli("--customers", "50", "--out", str(blocker / "out"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "--out" in lines[0]
    assert blocker.read_text() == "not a folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.parametrize("oracle", [False, True])
def test_cli_writes_the_tables_and_no_leftovers(tmp_path: Path, oracle: bool) -> None:
    out = tmp_path / "out"
    result = run_cli("--customers", "50", "--seed", "5", "--out", str(out), *(["--write-oracle"] if oracle else []))
    assert result.returncode == 0, result.stderr
    expected = {f"{name}.csv" for name in TABLE_NAMES} | ({"oracle_clv.csv"} if oracle else set()) | {"generator.json"}
    assert {p.name for p in out.iterdir()} == expected  # hidden temporary files would show here
    for name in expected:
        assert (out / name).stat().st_size > 0
    assert np.array_equal(pd.read_csv(out / "customers.csv")["customer_id"], np.arange(1, 51))


def test_a_rerun_in_another_format_leaves_only_its_own_tables(tmp_path: Path) -> None:
    """The contract reads a table's CSV before its Parquet: an earlier run's copy, or its oracle, would be read."""
    out = tmp_path / "out"
    first = run_cli("--customers", "50", "--seed", "5", "--out", str(out), "--write-oracle")
    assert first.returncode == 0, first.stderr
    again = run_cli("--customers", "60", "--seed", "6", "--out", str(out), "--format", "parquet")
    assert again.returncode == 0, again.stderr
    assert {p.name for p in out.iterdir()} == {f"{name}.parquet" for name in TABLE_NAMES} | {"generator.json"}
    assert len(pd.read_parquet(out / "customers.parquet")) == 60
