"""The synthetic bank, generated: a block of customers simulated month by month (clv.synthetic.run), laid out
as the four tables of the data contract (clv.synthetic.tables); a partitioned bank generated block by block."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clv.common import dates
from clv.common.cluster import Runner
from clv.common.io import atomic_folder
from clv.data.defaults import HORIZON_MONTHS
from clv.data.layout import Manifest, Part, part_name, write_manifest, write_part
from clv.synthetic.run import Block, Config, Run
from clv.synthetic.tables import customers_table, ledger_table, products_table, transactions_table, write_tables

__all__ = ["Block", "Config", "Plan", "generate", "simulate", "write_tables"]

logger = logging.getLogger(__name__)


def simulate(config: Config, block: Block | None = None) -> dict[str, pa.Table]:
    """Run the synthetic bank for one block of customers (default: the whole bank, ids 1..N); return its
    tables by name, and `oracle_clv` when asked."""
    if block is None:
        block = Block(np.arange(1, config.customers + 1), np.random.SeedSequence(config.seed))
    run = Run(config, block)
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
        tables["oracle_clv"] = pa.table(
            {
                "customer_id": pa.array(block.customer_id[keep]),
                "as_of": pa.array([config.oracle_as_of] * int(keep.sum()), pa.date32()),
                "expected_clv": pa.array(np.round(run.oracle[HORIZON_MONTHS][keep], 2)),
                "churn_probability": pa.array(
                    np.round(run.oracle_churn[keep], 4), mask=np.isnan(run.oracle_churn[keep])
                ),
                **{
                    f"expected_clv_{months}m": pa.array(np.round(values[keep], 2))
                    for months, values in run.oracle.items()
                    if months != HORIZON_MONTHS
                },
            }
        )
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


def part_seed(plan: Plan, part: str) -> Block:
    """The block of customers of one partition, with its own random stream."""
    index = plan.parts.index(part)
    seed = np.random.SeedSequence(plan.config.seed, spawn_key=(index,))
    return Block(plan.customer_ids(index), seed, index, plan.partitions)


def generate_part(plan: Plan, part: str, folder: Path) -> tuple[Part, int]:
    """Simulate one partition and write its tables into `folder`; its manifest entry and last day."""
    index = plan.parts.index(part)
    tables = simulate(plan.config, part_seed(plan, part))
    ledger_months = tables["customer_metrics"].column("month").chunk(0).dictionary
    last_txn = pc.max(tables["transactions"].column("transaction_date")).as_py()
    last_month = np.datetime64(ledger_months[-1].as_py(), "M").astype(np.int64) if len(ledger_months) else None
    last_day = dates.data_last_day(None if last_txn is None else dates.to_day(last_txn), last_month)
    return write_part(folder, index, tables), last_day


def generate(plan: Plan, out: Path, runner: Runner) -> Manifest:
    """The whole bank, part by part, into `out` (written beside it and renamed when complete)."""
    with atomic_folder(out) as folder:
        done = runner.map(generate_part, plan, label="generated", folder=folder)
        manifest = Manifest.of(
            [part for part, _ in done],
            "modulo",
            max(day for _, day in done),
            plan.config.describe() | {"partitions": plan.partitions},
        )
        write_manifest(folder, manifest)
    return manifest
