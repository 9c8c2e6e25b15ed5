"""A bank as numpy columns: whole tables (`bank_from_frames`), one API request (`bank_from_request`), or
several at once (`bank_from_requests`). Features and labels read a `Bank`, never the tables."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from clv.common import dates
from clv.data.contract import data_last_day, dense_ids, month_numbers, read_bank
from clv.data.schema import (
    FAMILIES,
    LEDGER_COLUMNS,
    PRODUCT_FAMILY,
    AcquisitionChannel,
    Channel,
    LedgerMonthIn,
    ProductIn,
    ProductStatus,
    ProductType,
    Region,
    TransactionIn,
    TransactionType,
    codes,
)

REGIONS = list(codes(Region))
ACQUISITION = list(codes(AcquisitionChannel))
PRODUCT_CODES = codes(ProductType)
TYPE_CODES = codes(TransactionType)
CHANNEL_CODES = codes(Channel)
STATUS_CODES = codes(ProductStatus)
FAMILY_OF_TYPE = np.array([FAMILIES.index(PRODUCT_FAMILY[t]) for t in ProductType])
CLOSED = STATUS_CODES[ProductStatus.CLOSED]

# which customers a load keeps: their ids in, a mask over them out
Keep = Callable[[np.ndarray], np.ndarray]


@dataclass
class Bank:
    """Tables as numpy columns; rows point to customers by position 0..n-1 (`cust`).

    Days are integers since 1970-01-01, months integers since 1970-01, unknown categories -1,
    unknown numbers NaN. `snapshot_day` is the day the product balances and tenure_months describe:
    balances are used only as of that day or later, never to look back.
    """

    customer_id: np.ndarray
    age: np.ndarray
    income: np.ndarray
    credit_score: np.ndarray
    region: np.ndarray
    acquisition: np.ndarray
    join_day: np.ndarray
    tenure_months: np.ndarray
    products: dict[str, np.ndarray] = field(default_factory=dict)
    transactions: dict[str, np.ndarray] = field(default_factory=dict)
    ledger: dict[str, np.ndarray] | None = None
    snapshot_day: float = np.nan

    @property
    def size(self) -> int:
        return int(self.customer_id.size)

    def first_day(self) -> np.ndarray:
        """Join day, or the first product or transaction when no join date is known."""
        first = self.join_day.copy()
        for table, column in ((self.products, "start"), (self.transactions, "day")):
            if table and table["cust"].size:
                seen = np.full(self.size, np.inf)
                np.minimum.at(seen, table["cust"], table[column])
                first = np.where(np.isnan(first), seen, first)
        return np.where(np.isinf(first), np.nan, first)

    def last_day(self) -> int:
        """The last date of the data: last transaction, or the end of the last ledger month."""
        days = self.transactions["day"] if self.transactions else np.zeros(0)
        months = self.ledger["month"] if self.ledger is not None else np.zeros(0)
        return dates.data_last_day(days.max() if days.size else None, months.max() if months.size else None)

    def product_state(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per product row: started by T, ended by T, open at T."""
        p = self.products
        started = p["start"] <= t
        ended = ~np.isnan(p["end"]) & (p["end"] <= t)
        # a product closed after T was open at T; "Closed" without an end date counts as closed already
        return started, ended, started & ~ended & ~(p["closed"] & np.isnan(p["end"]))


def per_customer(cust: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Sum of `weights` (or a count) per customer position 0..n-1 of rows pointing to `cust`."""
    return np.bincount(cust, weights=weights, minlength=n).astype(np.float64)


def load_bank(data_dir: Path) -> Bank:
    """Read and check a bank's folder (clv.data.contract), as a Bank."""
    return bank_from_tables(read_bank(data_dir))


def bank_from_tables(
    tables: dict[str, pd.DataFrame], keep: Keep | None = None, snapshot_day: float | None = None
) -> Bank:
    """The tables the contract read (by name) as a Bank, its balances as of `snapshot_day` (by default the tables'
    last date); with `keep`, of the customers it picks alone (their rows of every table, in their order), built
    without the others'."""
    if keep is not None:
        # as `only` cuts the whole tables' bank: a table without rows is none; one with rows stays a table, though
        # the kept customers have none of them; and the last date is the tables' (a bank of nobody has none)
        if snapshot_day is None:
            snapshot_day = float(data_last_day(tables))
        tables = {
            name: frame[keep(frame["customer_id"].to_numpy(np.int64))]
            for name, frame in tables.items()
            if len(frame) or name == "transactions"
        }
    return bank_from_frames(
        tables.get("customers"),
        tables["transactions"],
        tables.get("products"),
        tables.get("customer_metrics"),
        snapshot_day=snapshot_day,
        empty_tables=keep is not None,
    )


def only(bank: Bank, keep: np.ndarray) -> Bank:
    """The customers `keep` marks, with their rows of every table, in their order. A customer's features and labels
    read only its own rows, so they are the same here as in the whole bank, for a fraction of the work."""
    if keep.all():
        return bank
    position = np.cumsum(keep) - 1

    def rows(table: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
        if not table:
            return table
        mine = keep[table["cust"]]
        return {
            name: position[values[mine]].astype(values.dtype) if name == "cust" else values[mine]
            for name, values in table.items()
        }

    values = {}
    for name in (f.name for f in fields(Bank)):
        value = getattr(bank, name)
        if isinstance(value, np.ndarray):  # a column of the customers
            value = value[keep]
        elif isinstance(value, dict):  # a table
            value = rows(value)
        values[name] = value
    return Bank(**values)


def _codes(values: pd.Series | None, categories: list[str], n: int) -> np.ndarray:
    """Category values as codes in `categories` order; unknown or missing -1 (hashed, never one by one). The codes
    stay as small as pandas makes them (int8 for a few categories): widening a part's two columns of 5.3 million
    transactions to int64 took 12 ms warm and more on fresh pages, and its features read a byte a row."""
    if values is None:
        return np.full(n, -1, np.int8)
    return pd.Categorical(values, categories=categories).codes


def _days(values: pd.Series | None, n: int) -> np.ndarray:
    """Dates as days since 1970-01-01, NaN where missing."""
    if values is None:
        return np.full(n, np.nan)
    stamps = values.to_numpy() if pd.api.types.is_datetime64_dtype(values) else pd.to_datetime(values).to_numpy()
    parsed = stamps.astype("datetime64[D]")
    days = parsed.view(np.int64).astype(np.float64)
    days[np.isnat(parsed)] = np.nan
    return days


def _num(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float64, NaN where missing or not a number. A float64 column comes as it is, not copied (a
    part's amounts and ledger cost a copy each through pd.to_numeric, which copies even a number column): the
    Bank's array is then a view of the frame's memory, and neither is written into once the Bank is made."""
    if column not in frame:
        return np.full(len(frame), np.nan)
    values = frame[column]
    if not pd.api.types.is_numeric_dtype(values):
        values = pd.to_numeric(values, errors="coerce")
    return values.to_numpy(np.float64, na_value=np.nan)


def id_positions(ids: np.ndarray, rows: int):
    """A function from customer ids, all of them in `ids` (the contract checks the links first), to their positions
    there, for about `rows` rows: a table over ids dense for that many (dense_ids), else a hash table (pandas'
    Index), one lookup a row whatever the rows' order (a search a row, or a sort, costs twice as much over a part's
    millions of transactions). Over a partition's transactions the table takes about half the hash's time. An id
    between the known ones that is none of them is -1 either way."""
    low, high = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
    entry = np.int32 if ids.size < 2**31 else np.int64
    if dense_ids(ids, rows, entry_bytes=np.dtype(entry).itemsize) or not ids.size:
        table = np.full(high - low + 1, -1, entry)
        table[ids - low] = np.arange(ids.size)
        return lambda values: table[np.clip(values.to_numpy(np.int64) - low, 0, high - low)].astype(np.int64)
    index = pd.Index(ids)
    return lambda values: index.get_indexer(values.to_numpy(np.int64))


def bank_from_frames(
    customers: pd.DataFrame | None,
    transactions: pd.DataFrame,
    products: pd.DataFrame | None = None,
    ledger: pd.DataFrame | None = None,
    snapshot_day: float | None = None,
    empty_tables: bool = False,
) -> Bank:
    """Whole tables (as read by clv.data.contract) to a Bank. Customers come from customers.csv or, without
    it, from the transactions. The products' balances describe `snapshot_day`, by default the tables' last date.
    A products or ledger frame without rows is no table, unless `empty_tables`: then it is a table of no rows."""
    if customers is None or customers.empty:
        customers = pd.DataFrame({"customer_id": np.unique(transactions["customer_id"].to_numpy())})
    ids = customers["customer_id"].to_numpy(np.int64)
    position = id_positions(ids, sum(len(frame) for frame in (transactions, products, ledger) if frame is not None))
    n = ids.size
    bank = Bank(
        customer_id=ids,
        age=_num(customers, "age"),
        income=_num(customers, "income"),
        credit_score=_num(customers, "credit_score"),
        region=_codes(customers.get("region"), REGIONS, n),
        acquisition=_codes(customers.get("acquisition_channel"), ACQUISITION, n),
        join_day=_days(customers.get("join_date"), n),
        tenure_months=_num(customers, "tenure_months"),
    )
    bank.transactions = {
        "cust": position(transactions["customer_id"]),
        "day": _days(transactions["transaction_date"], len(transactions)),
        "amount": _num(transactions, "amount"),
        "type": _codes(transactions.get("transaction_type"), list(TYPE_CODES), len(transactions)),
        "channel": _codes(transactions.get("channel"), list(CHANNEL_CODES), len(transactions)),
    }
    if products is not None and (len(products) or empty_tables):
        bank.products = {
            "cust": position(products["customer_id"]),
            "type": _codes(products.get("product_type"), list(PRODUCT_CODES), len(products)),
            "start": _days(products["start_date"], len(products)),
            "end": _days(products.get("end_date"), len(products)),
            "balance": _num(products, "balance"),
            "credit_limit": _num(products, "credit_limit"),
            "closed": _codes(products.get("status"), list(STATUS_CODES), len(products)) == CLOSED,
        }
    if ledger is not None and (len(ledger) or empty_tables):
        bank.ledger = {
            "cust": position(ledger["customer_id"]),
            "month": month_numbers(ledger["month"]),
            **{c: _num(ledger, c) for c in ledger.columns if c not in ("customer_id", "month")},
        }
    # product balances are those at the end of the data: never read them as of an earlier date
    bank.snapshot_day = float(bank.last_day()) if snapshot_day is None else snapshot_day
    return bank


class Customer(Protocol):
    """A customer as a caller knows it, what bank_from_requests reads (the API's CustomerIn is one)."""

    customer_id: int
    age: float
    income: float
    credit_score: float
    tenure_months: float
    region: Region
    acquisition_channel: AcquisitionChannel
    join_date: dt.date | None
    products: list[ProductIn]
    transactions: list[TransactionIn]
    ledger: list[LedgerMonthIn]


def bank_from_request(customer: Customer, as_of: int) -> Bank:
    """One API request to a one-customer Bank. Its product balances and tenure are those of `as_of`."""
    return bank_from_requests([customer], as_of)


def bank_from_requests(customers: Sequence[Customer], as_of: int) -> Bank:
    """API requests of one as-of day as one Bank, customers in order, each one's rows in the order it sent them:
    build_features and the model then run once for all of them. Every column is made in one call over all the
    customers' items, not a small Bank a customer joined afterwards (which cost a served call several hundred
    numpy calls). Either every customer sends ledger months or none does: in a Bank with a ledger table, a customer
    without rows in it reads as months of zero margin, so callers put the two kinds in different Banks."""
    products = [p for c in customers for p in c.products]
    txns = [t for c in customers for t in c.transactions]
    rows = [r for c in customers for r in c.ledger]
    if rows and not all(c.ledger for c in customers):
        raise ValueError("customers with ledger months and customers without them cannot share one Bank")

    def owners(items: str) -> np.ndarray:
        return np.repeat(np.arange(len(customers)), [len(getattr(c, items)) for c in customers])

    # plain comprehensions: a request is scored in a fraction of a millisecond, and helpers would cost a tenth
    bank = Bank(
        customer_id=np.array([c.customer_id for c in customers]),
        age=np.array([c.age for c in customers], np.float64),
        income=np.array([c.income for c in customers], np.float64),
        credit_score=np.array([c.credit_score for c in customers], np.float64),
        region=np.array([REGIONS.index(c.region) for c in customers]),
        acquisition=np.array([ACQUISITION.index(c.acquisition_channel) for c in customers]),
        join_day=np.array(
            [np.nan if c.join_date is None else dates.to_day(c.join_date) for c in customers], np.float64
        ),
        tenure_months=np.array([c.tenure_months for c in customers], np.float64),
        snapshot_day=float(as_of),
    )
    bank.products = {
        "cust": owners("products"),
        "type": np.array([PRODUCT_CODES[p.product_type] for p in products], np.int64),
        "start": np.array([dates.to_day(p.start_date) for p in products], np.float64),
        "end": np.array([np.nan if p.end_date is None else dates.to_day(p.end_date) for p in products], np.float64),
        "balance": np.array([p.balance for p in products], np.float64),
        "credit_limit": np.array([np.nan if p.credit_limit is None else p.credit_limit for p in products], np.float64),
        "closed": np.array([p.status == ProductStatus.CLOSED for p in products], bool),
    }
    bank.transactions = {
        "cust": owners("transactions"),
        "day": np.array([dates.to_day(t.transaction_date) for t in txns], np.float64),
        "amount": np.array([t.amount for t in txns], np.float64),
        "type": np.array([-1 if t.transaction_type is None else TYPE_CODES[t.transaction_type] for t in txns]),
        "channel": np.array([-1 if t.channel is None else CHANNEL_CODES[t.channel] for t in txns]),
    }
    if rows:
        bank.ledger = {
            "cust": owners("ledger"),
            "month": np.array([r.month for r in rows], "datetime64[M]").astype(np.int64),
            **{
                name: np.array([np.nan if getattr(r, name) is None else getattr(r, name) for r in rows], np.float64)
                for name in LEDGER_COLUMNS
            },
        }
    return bank
