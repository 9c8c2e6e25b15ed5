"""Features as of a date: nothing after T reaches them, the label is as docs/domain.md says, a request is a row."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clv.common import dates
from clv.data import bank as bank_module
from clv.data.bank import Bank, bank_from_frames, bank_from_request, bank_from_requests, load_bank
from clv.data.contract import dense_ids, read_bank
from clv.data.schema import LEDGER_COLUMNS
from clv.model.features import FEATURE_NAMES, LEDGER_FEATURES, build_features
from clv.model.labels import future_value, joined
from clv.service.schemas.requests import CustomerIn

# a training cutoff (month end) and a day inside a month, where the month's ledger row is not yet complete
CUTOFFS = (dt.date(2023, 12, 31), dt.date(2023, 6, 14))


@pytest.fixture(scope="module")
def tables(bank_dir: Path) -> dict[str, pd.DataFrame]:
    return read_bank(bank_dir)


def bank_of(tables: dict[str, pd.DataFrame], ledger: bool = True) -> Bank:
    return bank_from_frames(
        tables.get("customers"),
        tables["transactions"],
        tables.get("products"),
        tables.get("customer_metrics") if ledger else None,
    )


def rows_by_id(bank: Bank, as_of: dt.date, ids: np.ndarray) -> np.ndarray:
    """The feature rows of customers `ids`, in that order."""
    frame = build_features(bank, dates.to_day(as_of))
    position = pd.Series(np.arange(bank.size), index=bank.customer_id)
    return frame.to_numpy()[position.loc[ids].to_numpy()]


def assert_same_features(expected: np.ndarray, actual: np.ndarray) -> None:
    """Equal to the bit, NaN where NaN; on failure, name the features that moved."""
    same = (expected == actual) | (np.isnan(expected) & np.isnan(actual))
    moved = {FEATURE_NAMES[j]: int((~same[:, j]).sum()) for j in np.flatnonzero(~same.all(axis=0))}
    assert not moved, f"features that changed (feature: rows): {moved}"


def ledger_month_end(ledger: pd.DataFrame) -> pd.Series:
    return pd.PeriodIndex(ledger["month"], freq="M").end_time.normalize().to_series(index=ledger.index)


# ---- no leakage ------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_of", CUTOFFS, ids=str)
def test_changing_everything_after_the_cutoff_leaves_the_features_unchanged(
    tables: dict[str, pd.DataFrame], as_of: dt.date
) -> None:
    rng = np.random.default_rng(0)
    t = pd.Timestamp(as_of)
    original = bank_of(tables)
    last = pd.Timestamp(dates.from_day(original.last_day()))
    c, p = tables["customers"].copy(), tables["products"].copy()
    x, m = tables["transactions"].copy(), tables["customer_metrics"].copy()

    def later(size: int) -> pd.Series:
        """Random dates in (T, the data's last date]."""
        return t + pd.to_timedelta(rng.integers(1, (last - t).days + 1, size), unit="D")

    # transactions after T: other amounts, types and channels, and more of them
    late = (x["transaction_date"] > t).to_numpy()
    assert late.any() and (~late).any()
    x.loc[late, "amount"] = np.round(rng.normal(0, 5_000, late.sum()), 2)
    for column in ("transaction_type", "channel"):
        x.loc[late, column] = rng.permutation(x.loc[late, column].to_numpy())
    extra = x.sample(500, random_state=1).assign(transaction_date=later(500).to_numpy())
    x = pd.concat([x, extra.assign(transaction_id=np.arange(500) + x["transaction_id"].max() + 1)], ignore_index=True)
    # ledger months that end after T: other numbers
    after = (ledger_month_end(m) > t).to_numpy()
    for column in m.columns.drop(["customer_id", "month"]):
        m.loc[after, column] = np.round(rng.normal(0, 1_000, after.sum()), 2)
    # products opened after T: another type and start; closed after T: closed on another later day
    opened = (p["start_date"] > t).to_numpy()
    closed = (p["end_date"] > t).to_numpy()
    assert opened.any() and closed.any()
    p.loc[opened, "product_type"] = rng.permutation(p.loc[opened, "product_type"].to_numpy())
    p.loc[opened, "start_date"] = later(opened.sum()).to_numpy()
    p.loc[closed, "end_date"] = np.maximum(later(closed.sum()), p.loc[closed, "start_date"]).to_numpy()
    # balances describe the data's last date, after T
    p["balance"] = np.round(rng.lognormal(8, 2, len(p)), 2)
    # customers who joined after T: joined on another later day
    newcomers = (c["join_date"] > t).to_numpy()
    c.loc[newcomers, "join_date"] = later(newcomers.sum()).to_numpy()

    changed = bank_of({"customers": c, "products": p, "transactions": x, "customer_metrics": m})
    assert changed.snapshot_day == original.snapshot_day  # the same last date: balances still describe it
    ids = original.customer_id
    assert_same_features(rows_by_id(original, as_of, ids), rows_by_id(changed, as_of, ids))


@pytest.mark.parametrize("as_of", CUTOFFS, ids=str)
def test_deleting_everything_after_the_cutoff_leaves_the_features_unchanged(
    tables: dict[str, pd.DataFrame], as_of: dt.date
) -> None:
    t = pd.Timestamp(as_of)
    original = bank_of(tables)
    c, p = tables["customers"], tables["products"]
    x, m = tables["transactions"], tables["customer_metrics"]
    c = c[c["join_date"] <= t]
    p = p[p["start_date"] <= t].copy()
    reopened = (p["end_date"] > t).to_numpy()  # closed after T: still open at T
    assert reopened.any()
    p.loc[reopened, "end_date"] = pd.NaT
    p.loc[reopened, "status"] = "Active"
    p["balance"] = np.round(np.random.default_rng(1).lognormal(8, 2, len(p)), 2)
    x = x[x["transaction_date"] <= t]
    m = m[(ledger_month_end(m) <= t).to_numpy()]
    truncated = bank_of({"customers": c, "products": p, "transactions": x, "customer_metrics": m})
    assert truncated.last_day() <= dates.to_day(as_of)
    # products.csv's balances (here scrambled) still describe the original last date, not T: say so
    truncated.snapshot_day = original.snapshot_day
    ids = original.customer_id[joined(original, dates.to_day(as_of))]
    assert np.array_equal(np.sort(ids), np.sort(truncated.customer_id))
    assert_same_features(rows_by_id(original, as_of, ids), rows_by_id(truncated, as_of, ids))


def test_ledger_months_count_only_once_ended(tables: dict[str, pd.DataFrame]) -> None:
    """As of 2023-06-14 the last full ledger month is May: margin_last_month is May's net margin."""
    bank = bank_of(tables)
    m = tables["customer_metrics"]
    may = m[m["month"] == "2023-05"].set_index("customer_id")["net_margin"]
    rows = rows_by_id(bank, dt.date(2023, 6, 14), may.index.to_numpy())
    np.testing.assert_allclose(rows[:, FEATURE_NAMES.index("margin_last_month")], may.to_numpy())
    june = m[m["month"] == "2023-06"].set_index("customer_id")["net_margin"]
    rows = rows_by_id(bank, dt.date(2023, 6, 30), june.index.to_numpy())
    np.testing.assert_allclose(rows[:, FEATURE_NAMES.index("margin_last_month")], june.to_numpy())


def test_missing_tables_give_missing_values_not_crashes(tables: dict[str, pd.DataFrame]) -> None:
    bare = bank_from_frames(None, tables["transactions"][["customer_id", "transaction_date", "amount"]])
    X = build_features(bare, bare.last_day())
    assert X.shape == (bare.size, len(FEATURE_NAMES))
    assert list(X.columns) == list(FEATURE_NAMES)
    for name in ("age", "open_products", "deposits_balance", *LEDGER_FEATURES, "branch_share_365d"):
        assert X[name].isna().all(), name
    assert (X["txn_count_365d"] > 0).any()
    assert (X["tenure_months"] >= 0).all()


@pytest.mark.parametrize(("spacing", "table"), [(400, True), (1_000_003, False)], ids=["partition", "far_apart"])
def test_scattered_ids_give_the_features_of_dense_ids_in_any_row_order(
    tables: dict[str, pd.DataFrame], spacing: int, table: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids spread as a partition's of a bank split by modulo (its rows pay for a lookup table over their range), or
    far apart (no table: a hash), map to the same customers whether the transactions are sorted by customer or not."""
    as_of = dates.to_day(CUTOFFS[0])
    expected = build_features(bank_of(tables), as_of).to_numpy()
    spread = {name: frame.assign(customer_id=frame["customer_id"] * spacing) for name, frame in tables.items()}
    by_customer = spread["transactions"].sort_values("customer_id", kind="stable")
    assert not spread["transactions"]["customer_id"].is_monotonic_increasing
    chosen: list[bool] = []  # the way bank_from_frames took: the real rule's answers

    def recorded(*args: object, **kwargs: object) -> bool:
        chosen.append(dense_ids(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(bank_module, "dense_ids", recorded)
    for transactions in (spread["transactions"], by_customer):
        bank = bank_of(spread | {"transactions": transactions})
        assert_same_features(expected, build_features(bank, as_of).to_numpy())
    assert chosen == [table, table]


# ---- the label --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("as_of", "horizon", "rate"), [(dt.date(2023, 12, 31), 12, 0.10), (dt.date(2023, 6, 14), 6, 0.05)], ids=str
)
def test_future_value_is_the_discounted_ledger_of_the_months_after(
    bank_dir: Path, as_of: dt.date, horizon: int, rate: float
) -> None:
    ledger = pd.read_csv(bank_dir / "customer_metrics.csv", dtype={"month": str})
    customers = pd.read_csv(bank_dir / "customers.csv")
    months = ledger["month"].str[:4].astype(int) * 12 + ledger["month"].str[5:].astype(int)
    ahead = months - (as_of.year * 12 + as_of.month)
    future = ledger[(ahead >= 1) & (ahead <= horizon)]
    weight = 1.0 / (1.0 + rate) ** (ahead[future.index] / 12.0)
    expected = (future["net_margin"] * weight).groupby(future["customer_id"]).sum()
    expected = expected.reindex(customers["customer_id"], fill_value=0.0)

    bank = load_bank(bank_dir)
    value = pd.Series(future_value(bank, dates.to_day(as_of), horizon, rate), index=bank.customer_id)
    assert (expected != 0).sum() > 100
    np.testing.assert_allclose(value.loc[expected.index].to_numpy(), expected.to_numpy(), rtol=1e-12, atol=1e-9)


def tiny_bank() -> Bank:
    """Two customers, transactions only, around T = 2024-01-15."""
    rows = [
        (7, "2024-01-15", 100.0),  # on T: the past
        (7, "2024-01-16", 200.0),  # T's own month: weight 1
        (7, "2024-02-29", 300.0),  # 1 month after T's month
        (7, "2024-03-10", -50.0),  # money out is not value
        (7, "2024-04-15", 400.0),  # T + 3 months: inside
        (7, "2024-04-16", 500.0),  # after T + 3 months: outside
        (9, "2023-12-01", 1_000.0),  # before T
        (9, "2024-03-31", 10.0),  # 2 months after T's month
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "transaction_date", "amount"])
    frame["transaction_date"] = pd.to_datetime(frame["transaction_date"])
    return bank_from_frames(None, frame)


def test_future_value_without_a_ledger_is_the_discounted_positive_inflow() -> None:
    bank = tiny_bank()
    w = 1.1 ** -(np.arange(4) / 12)
    value = dict(zip(bank.customer_id, future_value(bank, dates.to_day(dt.date(2024, 1, 15)), 3), strict=True))
    assert value[7] == pytest.approx(200 * w[0] + 300 * w[1] + 400 * w[3], rel=1e-12)
    assert value[9] == pytest.approx(10 * w[2], rel=1e-12)
    # a month-end T: the months are Feb..Apr, the window ends on 2024-04-30
    value = dict(zip(bank.customer_id, future_value(bank, dates.to_day(dt.date(2024, 1, 31)), 3), strict=True))
    assert value[7] == pytest.approx(300 * w[1] + 400 * w[3] + 500 * w[3], rel=1e-12)
    assert value[9] == pytest.approx(10 * w[2], rel=1e-12)


# ---- one request, one table row ----------------------------------------------------------------------


def request_of(tables: dict[str, pd.DataFrame], customer_id: int, as_of: dt.date, ledger: bool = False) -> CustomerIn:
    """The customer as an API caller sends them: products with their balances today, every transaction, and with
    `ledger` every month of its profit ledger."""
    c = tables["customers"].set_index("customer_id").loc[customer_id]
    p = tables["products"][tables["products"]["customer_id"] == customer_id]
    x = tables["transactions"][tables["transactions"]["customer_id"] == customer_id]
    m = tables["customer_metrics"][tables["customer_metrics"]["customer_id"] == customer_id] if ledger else None

    def day(value: pd.Timestamp) -> str | None:
        return None if pd.isna(value) else value.date().isoformat()

    def number(value: float) -> float | None:
        return None if pd.isna(value) else float(value)

    return CustomerIn(
        customer_id=customer_id,
        age=c["age"],
        income=c["income"],
        credit_score=c["credit_score"],
        tenure_months=c["tenure_months"],
        region=str(c["region"]),
        acquisition_channel=str(c["acquisition_channel"]),
        join_date=day(c["join_date"]),
        as_of=as_of,
        products=[
            {
                "product_type": str(r.product_type),
                "start_date": day(r.start_date),
                "end_date": day(r.end_date),
                "balance": r.balance,
                "status": str(r.status),
                "credit_limit": number(r.credit_limit),
                "interest_rate": number(r.interest_rate),
            }
            for r in p.itertuples()
        ],
        transactions=[
            {
                "transaction_date": day(r.transaction_date),
                "amount": r.amount,
                "transaction_type": str(r.transaction_type),
                "channel": str(r.channel),
            }
            for r in x.itertuples()
        ],
        ledger=[]
        if m is None
        else [
            {"month": str(r["month"]), **{name: number(r[name]) for name in LEDGER_COLUMNS}} for _, r in m.iterrows()
        ],
    )


def test_a_request_gives_the_row_of_the_same_customer_in_the_tables(tables: dict[str, pd.DataFrame]) -> None:
    table_bank = bank_of(tables, ledger=False)
    day = table_bank.last_day()
    as_of = dates.from_day(day)
    p = tables["products"]
    card = p.loc[p["product_type"] == "Credit Card", "customer_id"]
    gone = p.loc[p["status"] == "Closed", "customer_id"]
    ids = np.unique(np.concatenate([tables["customers"]["customer_id"].to_numpy()[:12], card[:3], gone[:3]]))
    ids = ids[pd.Series(joined(table_bank, day), index=table_bank.customer_id).loc[ids].to_numpy()]
    assert ids.size >= 12
    expected = rows_by_id(table_bank, as_of, ids)
    requests = [request_of(tables, int(i), as_of) for i in ids]
    served = np.vstack([build_features(bank_from_request(request, day), day).to_numpy() for request in requests])
    assert_same_features(expected, served)
    together = build_features(bank_from_requests(requests, day), day).to_numpy()  # as the service scores a batch
    assert_same_features(expected, together)


def test_requests_with_their_ledger_give_the_rows_of_the_same_customers_in_the_tables(
    tables: dict[str, pd.DataFrame],
) -> None:
    table_bank = bank_of(tables)
    day = table_bank.last_day()
    as_of = dates.from_day(day)
    ids = tables["customer_metrics"]["customer_id"].unique()[:12]
    requests = [request_of(tables, int(i), as_of, ledger=True) for i in ids]
    together = build_features(bank_from_requests(requests, day), day).to_numpy()
    assert_same_features(rows_by_id(table_bank, as_of, ids), together)
    without = request_of(tables, int(ids[0]), as_of)
    with pytest.raises(ValueError, match="ledger months and customers without them cannot share one Bank"):
        bank_from_requests([*requests[:2], without], day)
