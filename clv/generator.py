"""The synthetic bank, run: a block of customers simulated month by month (clv.simulation), laid out as
the four tables of the data contract (clv.tables); a partitioned bank generated block by block."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clv import dates
from clv.cluster import Runner
from clv.io import atomic_folder
from clv.layout import Manifest, Part, part_name, write_manifest, write_part
from clv.schema import HORIZON_MONTHS, LEDGER_PARTS
from clv.simulation import (
    CARD,
    LOAN,
    MORT,
    TERM_MONTHS,
    State,
    draw_customers,
    expected_value,
    family_balances,
    first_products,
    open_products,
    step,
)
from clv.tables import customers_table, ledger_table, materialize, products_table, transactions_table, write_tables

__all__ = ["Block", "Config", "Plan", "generate", "simulate", "write_tables"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    customers: int = 10_000
    start: dt.date = dt.date(2020, 1, 1)
    end: dt.date = dt.date(2024, 12, 31)
    seed: int = 42
    oracle: bool = False

    def describe(self) -> dict:
        """The settings, as written beside a synthetic bank so that a model trained on it can say so."""
        return {"generator": "clv.generator", "customers": self.customers, "start": self.start.isoformat(),
                "end": self.end.isoformat(), "seed": self.seed}  # fmt: skip

    @property
    def oracle_as_of(self) -> dt.date:
        """The as-of date of oracle_clv: the last month end minus the horizon (the default training cutoff)."""
        return dates.add_months(dates.last_month_end(self.end), -HORIZON_MONTHS)


class Columns:
    """Collects per-month columns and hands each out as one array."""

    def __init__(self) -> None:
        self.chunks: dict[str, list[np.ndarray]] = {}

    def add(self, **columns: np.ndarray) -> None:
        for name, values in columns.items():
            self.chunks.setdefault(name, []).append(values)

    def column(self, name: str) -> np.ndarray:
        return np.concatenate(self.chunks[name])


@dataclass(frozen=True)
class Block:
    """A set of customers simulated together with their own random streams. Product and transaction ids
    interleave across blocks (the k-th id of block b of B is k * B + b + 1), so they are unique across the
    bank whatever the number of blocks, and 1, 2, 3, ... when there is one block."""

    customer_id: np.ndarray
    seed: np.random.SeedSequence
    index: int = 0
    count: int = 1

    def ids(self, local: np.ndarray) -> np.ndarray:
        return np.asarray(local, np.int64) * self.count + self.index + 1


class _Run:
    """One block simulated month by month: its state, the ids of its products, and the rows it collects."""

    def __init__(self, config: Config, block: Block) -> None:
        main_seq, display_seq, self.oracle_seq = block.seed.spawn(3)
        self.faker_seq, self.status_seq = display_seq.spawn(2)
        self.rng = np.random.default_rng(main_seq)
        self.config, self.block = config, block
        self.n = n = block.customer_id.size
        self.attrs = draw_customers(n, config.start, config.end, self.rng)
        self.state = State.of(self.attrs)
        self.pid = np.zeros((n, 6), np.int64)  # the id of each customer's current product in each slot
        self.products, self.closes, self.ledger, self.txns = Columns(), Columns(), Columns(), Columns()
        self.opened = 0
        self.oracle: np.ndarray | None = None

    def record_opens(self, rows: np.ndarray, types: np.ndarray, start_day: np.ndarray) -> None:
        local = np.arange(self.opened, self.opened + rows.size)
        self.opened += rows.size
        self.pid[rows, types] = self.block.ids(local)
        limit = np.where(types == CARD, self.state.limit[rows], np.nan)  # the card's own limit, not a later one
        self.products.add(local=local, owner=rows, type=types, start=start_day, limit=limit)

    def join(self, month: int, first: int) -> np.ndarray:
        """Customers whose join month has come open their first products; returns their rows."""
        state, rng = self.state, self.rng
        joining = np.flatnonzero(
            (dates.month_of(self.attrs["join_day"]) <= month) & ~state.active & (state.opened_ever == 0)
        )
        if not joining.size:
            return joining
        rows, types = np.nonzero(first_products(state, joining, rng))
        rows = joining[rows]
        open_products(state, rows, types, rng)
        join_day = self.attrs["join_day"][rows]
        # customers who joined before the window opened these products some time before it
        start_day = np.where(
            join_day < first, join_day + np.floor(rng.random(rows.size) * (first - join_day)), join_day
        ).astype(np.int64)
        age_months = (first - start_day) / 30.4
        for k in (MORT, LOAN):
            sel = types == k
            r = state.rate[rows[sel], k] / 12
            p = state.payment[rows[sel], k]
            left = np.maximum(TERM_MONTHS[k] - age_months[sel], 1)
            state.balance[rows[sel], k] = np.round(p * (1 - (1 + r) ** -left) / r, 2)
        self.record_opens(rows, types, start_day)
        state.active[joining] = True
        return joining

    def month(self, month: int, oracle_month: int) -> None:
        """One calendar month: joins, the month's step, its closes and opens, ledger rows and transactions."""
        state, rng, end_day = self.state, self.rng, dates.to_day(self.config.end)
        first = int(dates.month_start(month))
        last_day = min(first + int(dates.days_in_month(month)) - 1, end_day)
        was_new = np.zeros(self.n, bool)
        was_new[self.join(month, first)] = True
        rows = np.flatnonzero(state.active)
        ev = step(state, rng)
        # in the month a customer joins, nothing closes or opens before the day it joined
        floor = np.clip(self.attrs["join_day"], first, last_day)
        close_day = np.where(ev["churned"], rng.integers(floor, last_day + 1), 0)
        c_rows, c_types = np.nonzero(ev["closed"])
        own_day = rng.integers(floor[c_rows], last_day + 1)
        local = (self.pid[c_rows, c_types] - self.block.index - 1) // self.block.count
        self.closes.add(local=local, end=np.where(ev["churned"][c_rows], close_day[c_rows], own_day))
        o_rows, o_types = np.nonzero(ev["opened"])
        open_products(state, o_rows, o_types, rng)
        self.record_opens(o_rows, o_types, rng.integers(floor[o_rows], last_day + 1))
        if month == oracle_month and self.config.oracle:
            self.oracle = expected_value(state, np.random.default_rng(self.oracle_seq))
        self.ledger.add(
            owner=rows,
            month=np.full(rows.size, month),
            **{f"{family}_balance": balance[rows] for family, balance in family_balances(state).items()},
            **{k: ev[k][rows] for k in (*LEDGER_PARTS, "net_margin")},
        )
        counts = ev["counts"] * ~was_new[:, None]
        self.txns.add(**materialize(counts, ev["steady"], self.pid, state, first, last_day - first + 1, rng))


def simulate(config: Config, block: Block | None = None) -> dict[str, pa.Table]:
    """Run the synthetic bank for one block of customers (default: the whole bank, ids 1..N); return its
    tables by name, and `oracle_clv` when asked."""
    if block is None:
        block = Block(np.arange(1, config.customers + 1), np.random.SeedSequence(config.seed))
    run = _Run(config, block)
    start_month = int(dates.month_of(dates.to_day(config.start)))
    end_month = int(dates.month_of(dates.to_day(config.end)))
    oracle_month = int(dates.month_of(dates.to_day(config.oracle_as_of)))
    for month in range(start_month, end_month + 1):
        run.month(month, oracle_month)
    logger.debug("simulated %d customers over %d months", run.n, end_month - start_month + 1)
    tables = {
        "customers": customers_table(run),
        "products": products_table(run),
        "transactions": transactions_table(run),
        "customer_metrics": ledger_table(run),
    }
    if run.oracle is not None:
        keep = run.attrs["join_day"] <= dates.to_day(config.oracle_as_of)
        tables["oracle_clv"] = pa.table({
            "customer_id": pa.array(block.customer_id[keep]),
            "as_of": pa.array([config.oracle_as_of] * int(keep.sum()), pa.date32()),
            "expected_clv": pa.array(np.round(run.oracle[keep], 2)),
        })  # fmt: skip
    return tables


@dataclass(frozen=True)
class Plan:
    """A partitioned synthetic bank to generate: partition p holds the customers whose id modulo the
    count is p, simulated with the p-th random stream spawned from the seed; so the files depend on the
    seed and the count of partitions only, never on how many workers made them."""

    config: Config
    partitions: int

    @property
    def parts(self) -> list[str]:
        return [part_name(p) for p in range(self.partitions)]

    def customer_ids(self, index: int) -> np.ndarray:
        return np.arange(index or self.partitions, self.config.customers + 1, self.partitions)

    def customers_in(self, parts: list[str]) -> int:
        return sum(self.customer_ids(self.parts.index(part)).size for part in parts)


def generate_part(plan: Plan, part: str, folder: Path) -> tuple[Part, int]:
    """Simulate one partition and write its tables into `folder`; its manifest entry and last day."""
    index = plan.parts.index(part)
    seed = np.random.SeedSequence(plan.config.seed, spawn_key=(index,))
    block = Block(plan.customer_ids(index), seed, index, plan.partitions)
    tables = simulate(plan.config, block)
    ledger_months = tables["customer_metrics"].column("month").chunk(0).dictionary
    last_txn = pc.max(tables["transactions"].column("transaction_date")).as_py()
    last_month = np.datetime64(ledger_months[-1].as_py(), "M").astype(np.int64) if len(ledger_months) else None
    last_day = dates.data_last_day(None if last_txn is None else dates.to_day(last_txn), last_month)
    return write_part(folder, index, tables), last_day


def generate(plan: Plan, out: Path, runner: Runner) -> Manifest:
    """The whole bank, part by part, into `out` (written beside it and renamed when complete)."""
    with atomic_folder(out) as folder:
        done = runner.map(generate_part, plan, label="generated", folder=folder)
        manifest = Manifest.of([part for part, _ in done], "modulo", max(day for _, day in done),
                               plan.config.describe() | {"partitions": plan.partitions})  # fmt: skip
        write_manifest(folder, manifest)
    return manifest
