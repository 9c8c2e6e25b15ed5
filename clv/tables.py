"""The synthetic bank's rows and tables: a month's transaction rows from its counts, and a simulated
block's four tables of the data contract, written as CSV or Parquet."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from faker import Faker

from clv import dates
from clv.io import atomic_path, write_csv, write_json
from clv.layout import GENERATED, ORACLE
from clv.schema import TABLES, AcquisitionChannel, Channel, ProductStatus, ProductType, Region, TransactionType
from clv.simulation import (
    CARD,
    CHK,
    DEP,
    FEE,
    INV,
    LOAN,
    LOAN_PAY,
    MORT,
    MORT_PAY,
    SAV,
    SPEND,
    TRF,
    WDR,
    State,
    sigmoid,
)

if TYPE_CHECKING:
    from clv.generator import Config, _Run

logger = logging.getLogger(__name__)

PRODUCT_TYPES = [t.value for t in ProductType]
KIND_TYPE = np.array([list(TransactionType).index(t) for t in (
    TransactionType.DEPOSIT, TransactionType.WITHDRAWAL, TransactionType.TRANSFER,
    TransactionType.BILL_PAYMENT, TransactionType.FEE, TransactionType.CARD_PURCHASE,
    TransactionType.LOAN_PAYMENT, TransactionType.LOAN_PAYMENT)], dtype=np.int8)  # fmt: skip
# The product each kind moves money on: first held product of the list.
KIND_PRODUCTS = ((CHK, SAV), (CHK, SAV), (CHK, SAV, INV), (CHK,), (CHK, SAV), (CARD,), (MORT,), (LOAN,))
ONLINE, MOBILE, BRANCH, ATM = range(4)


def materialize(
    counts: np.ndarray,
    steady: np.ndarray,
    pid: np.ndarray,
    state: State,
    first: int,
    days: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Expand a month's (customer x kind) counts into transaction rows, on products held all month."""
    n, kinds = counts.shape
    flat = np.repeat(np.arange(n * kinds), counts.ravel())
    cust, kind = flat // kinds, flat % kinds
    product = np.zeros((n, kinds), np.int64)
    for k, candidates in enumerate(KIND_PRODUCTS):
        for p in reversed(candidates):  # the first candidate held wins
            product[:, k] = np.where(steady[:, p], pid[:, p], product[:, k])
    income = state.income[cust]
    size = rng.lognormal(0.0, 0.8, flat.size)
    typical = (
        np.array([0.35 / 12, 0.004, 0.01, 0.0025, 0, 0.0009, 0, 0])[kind] * income * np.exp(0.3 * state.wallet[cust])
    )
    amount = np.select(
        [kind == DEP, kind == FEE, kind == MORT_PAY, kind == LOAN_PAY, kind == TRF],
        [
            typical * size,
            -8.0,
            -state.payment[cust, MORT],
            -state.payment[cust, LOAN],
            typical * size * np.where(rng.random(flat.size) < 0.45 - 0.2 * state.drifting[cust], 1, -1),
        ],
        -typical * size,
    )
    amount = np.where(kind == SPEND, -45 * size, amount)
    digital = rng.random(flat.size) < state.digital[cust]
    mobile = rng.random(flat.size) < sigmoid(-0.06 * (state.age[cust] - 40))
    counter = np.where((kind == WDR) & (rng.random(flat.size) < 0.75), ATM, BRANCH)
    channel = np.where(digital | (kind >= SPEND) | (kind == FEE), np.where(mobile, MOBILE, ONLINE), counter)
    day = first + np.floor(rng.random(flat.size) * days).astype(np.int64)
    order = np.argsort((day - first).astype(np.int16), kind="stable")  # 16-bit keys sort by radix
    return {
        "owner": cust[order].astype(np.int32),
        "product_id": product[cust, kind][order],
        "day": day[order].astype(np.int32),
        "type": KIND_TYPE[kind][order],
        "amount": np.round(amount, 2)[order],
        "channel": channel[order].astype(np.int8),
    }


def _dictionary(codes: np.ndarray, values: list[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int16)), pa.array(values))


def _dates(days: np.ndarray) -> pa.Array:
    return pa.array(days.astype(np.int32)).cast(pa.date32())


def display_names(ids: np.ndarray, seq: np.random.SeedSequence) -> tuple[np.ndarray, np.ndarray]:
    """Names and emails for display only, sampled from a small pool that one seeded Faker draws."""
    fake = Faker("en_US")
    fake.seed_instance(int(seq.generate_state(1)[0]))
    first = np.array([fake.first_name() for _ in range(400)])
    last = np.array([fake.last_name() for _ in range(600)])
    rng = np.random.default_rng(seq)
    f, s = first[rng.integers(0, first.size, ids.size)], last[rng.integers(0, last.size, ids.size)]
    names = np.char.add(np.char.add(f, " "), s)
    emails = np.char.add(
        np.char.add(np.char.lower(np.char.add(np.char.add(f, "."), s)), ids.astype(str)), "@example.com"
    )
    return names, emails


def customers_table(run: _Run) -> pa.Table:
    ids, attrs = run.block.customer_id, run.attrs
    names, emails = display_names(ids, run.faker_seq)
    join = attrs["join_day"]
    tenure = dates.months_between(join, dates.to_day(run.config.end))
    return pa.table({
        "customer_id": pa.array(ids),
        "name": pa.array(names),
        "email": pa.array(emails),
        "age": pa.array(attrs["age"].astype(np.int64)),
        "income": pa.array(attrs["income"]),
        "credit_score": pa.array(attrs["credit_score"].astype(np.int64)),
        "region": _dictionary(attrs["region"], [r.value for r in Region]),
        "acquisition_channel": _dictionary(attrs["acquisition"], [c.value for c in AcquisitionChannel]),
        "join_date": _dates(join),
        "tenure_months": pa.array(tenure.astype(np.int64)),
    })  # fmt: skip


def products_table(run: _Run) -> pa.Table:
    """Products with their balance and status at the end date; statuses draw from their own stream."""
    state, products = run.state, run.products
    local, owner, ptype = products.column("local"), products.column("owner"), products.column("type")
    product_id = run.block.ids(local)
    end = np.full(local.size, -1, np.int64)
    end[run.closes.column("local")] = run.closes.column("end")
    is_open = end < 0
    current = run.pid[owner, ptype] == product_id
    balance = np.where(is_open & current, state.balance[owner, ptype], 0.0)
    rate = np.where(ptype == INV, np.nan, state.rate[owner, ptype])  # an investment has no rate
    rng = np.random.default_rng(run.status_seq)
    active, inactive, suspended, closed = range(4)  # the order of ProductStatus
    quiet = is_open & (ptype == SAV) & (balance < 50)
    late = is_open & np.isin(ptype, (CARD, LOAN)) & (rng.random(ptype.size) < 0.02 * np.exp(state.risk[owner]))
    status = np.select([~is_open, late, quiet], [closed, suspended, inactive], active)
    return pa.table({
        "product_id": pa.array(product_id),
        "customer_id": pa.array(run.block.customer_id[owner]),
        "product_type": _dictionary(ptype, PRODUCT_TYPES),
        "start_date": _dates(products.column("start")),
        "end_date": pa.array(end.astype(np.int32), mask=is_open).cast(pa.date32()),
        "balance": pa.array(np.round(balance, 2)),
        "credit_limit": pa.array(products.column("limit"), from_pandas=True),
        "interest_rate": pa.array(np.round(rate * 100, 2), from_pandas=True),
        "status": _dictionary(status, [s.value for s in ProductStatus]),
    })  # fmt: skip


def transactions_table(run: _Run) -> pa.Table:
    txns = run.txns
    day = txns.column("day")
    return pa.table({
        "transaction_id": pa.array(run.block.ids(np.arange(day.size))),
        "customer_id": pa.array(run.block.customer_id[txns.column("owner")]),
        "product_id": pa.array(txns.column("product_id")),
        "transaction_date": _dates(day),
        "transaction_type": _dictionary(txns.column("type"), [t.value for t in TransactionType]),
        "amount": pa.array(txns.column("amount")),
        "channel": _dictionary(txns.column("channel"), [c.value for c in Channel]),
    })  # fmt: skip


def ledger_table(run: _Run) -> pa.Table:
    ledger = run.ledger
    months = ledger.column("month")
    first_month = int(months.min())
    labels = dates.month_label(np.arange(first_month, int(months.max()) + 1))
    columns = {
        "customer_id": pa.array(run.block.customer_id[ledger.column("owner")]),
        "month": _dictionary(months - first_month, list(labels)),
    }
    for name in ledger.chunks:
        if name not in ("owner", "month"):
            columns[name] = pa.array(ledger.column(name))
    return pa.table(columns)


def write_tables(
    tables: dict[str, pa.Table], out: Path, file_format: str = "csv", config: Config | None = None
) -> list[Path]:
    """Write every table beside the others, each under a temporary name first, then renamed; with the
    generator's settings in generator.json when `config` is given. A table left there by an earlier run in
    the other format, or an oracle this run does not write, is removed: the contract would read it."""
    out.mkdir(parents=True, exist_ok=True)
    if config is not None:
        write_json(config.describe(), out / GENERATED)
    paths = []
    for name, table in tables.items():
        path = out / f"{name}.{file_format}"
        if file_format == "csv":
            write_csv(table, path)
        else:
            with atomic_path(path) as tmp:
                pq.write_table(table, tmp)
        paths.append(path)
        logger.info("wrote %s rows to %s", f"{table.num_rows:,}", path)
    for name in (*TABLES, ORACLE):
        for stale in (out / f"{name}.csv", out / f"{name}.parquet"):
            if stale not in paths and stale.exists():
                stale.unlink()
                logger.info("removed %s, an earlier run's", stale)
    return paths
