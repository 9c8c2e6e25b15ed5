"""The synthetic bank's rows and tables: a month's transaction rows from its counts, and a simulated
block's four tables of the data contract, written as CSV or Parquet."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
from faker import Faker

from clv.common import dates
from clv.common.io import atomic_path, write_csv, write_json
from clv.data.layout import GENERATED, ORACLE, write_parquet
from clv.data.schema import TABLES, AcquisitionChannel, Channel, ProductStatus, ProductType, Region, TransactionType
from clv.synthetic.run import Config, Run
from clv.synthetic.simulation import (
    CARD,
    INV,
    LOAN,
    SAV,
)

logger = logging.getLogger(__name__)

PRODUCT_TYPES = [t.value for t in ProductType]


def _dictionary(codes: np.ndarray, values: list[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int16)), pa.array(values))


def _dates(days: np.ndarray) -> pa.Array:
    return pa.array(days.astype(np.int32)).cast(pa.date32())


def display_names(ids: np.ndarray, seq: np.random.SeedSequence) -> tuple[np.ndarray, np.ndarray]:
    """Names and emails for display only, sampled from a small pool that one seeded Faker draws: each half in one
    call, the same names as calling first_name() 400 times and last_name() 600 times, a hundred times faster."""
    fake = Faker("en_US")
    fake.seed_instance(int(seq.generate_state(1)[0]))
    person = fake.provider("faker.providers.person")
    first = np.array(fake.random_elements(person.first_names, length=400, use_weighting=True))
    last = np.array(fake.random_elements(person.last_names, length=600, use_weighting=True))
    rng = np.random.default_rng(seq)
    f, s = first[rng.integers(0, first.size, ids.size)], last[rng.integers(0, last.size, ids.size)]
    names = np.char.add(np.char.add(f, " "), s)
    emails = np.char.add(
        np.char.add(np.char.lower(np.char.add(np.char.add(f, "."), s)), ids.astype(str)), "@example.com"
    )
    return names, emails


def customers_table(run: Run) -> pa.Table:
    ids, attrs = run.block.customer_id, run.attrs
    names, emails = display_names(ids, run.faker_seq)
    join = attrs["join_day"]
    tenure = dates.months_between(join, dates.to_day(run.config.end))
    return pa.table(
        {
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
        }
    )


def products_table(run: Run) -> pa.Table:
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
    return pa.table(
        {
            "product_id": pa.array(product_id),
            "customer_id": pa.array(run.block.customer_id[owner]),
            "product_type": _dictionary(ptype, PRODUCT_TYPES),
            "start_date": _dates(products.column("start")),
            "end_date": pa.array(end.astype(np.int32), mask=is_open).cast(pa.date32()),
            "balance": pa.array(np.round(balance, 2)),
            "credit_limit": pa.array(products.column("limit"), from_pandas=True),
            "interest_rate": pa.array(np.round(rate * 100, 2), from_pandas=True),
            "status": _dictionary(status, [s.value for s in ProductStatus]),
        }
    )


def transactions_table(run: Run) -> pa.Table:
    txns = run.txns
    day = txns.column("day")
    return pa.table(
        {
            "transaction_id": pa.array(run.block.ids(np.arange(day.size))),
            "customer_id": pa.array(run.block.customer_id[txns.column("owner")]),
            "product_id": pa.array(txns.column("product_id")),
            "transaction_date": _dates(day),
            "transaction_type": _dictionary(txns.column("type"), [t.value for t in TransactionType]),
            "amount": pa.array(txns.column("amount")),
            "channel": _dictionary(txns.column("channel"), [c.value for c in Channel]),
        }
    )


def ledger_table(run: Run) -> pa.Table:
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
                write_parquet(name, table, tmp)
        paths.append(path)
        logger.info("wrote %s rows to %s", f"{table.num_rows:,}", path)
    for name in (*TABLES, ORACLE):
        for stale in (out / f"{name}.csv", out / f"{name}.parquet"):
            if stale not in paths and stale.exists():
                stale.unlink()
                logger.info("removed %s, an earlier run's", stale)
    return paths
