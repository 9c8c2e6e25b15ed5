"""Bring a big bank: a flat folder of the contract's files (CSV or Parquet, any size) to the partitioned
layout (clv.data.layout), out of core; or a database's bank, as of one snapshot (`export`).

1. Each file is read in blocks and checked with the contract's own rules, rows numbered across blocks, so
   a refusal names the source file, row and column as for a flat folder; customers' and products' ids are
   kept to check the links; every row gets its partition from a hash of its customer id; the checked
   blocks are written as Parquet to a staging folder.
2. Dask's shuffle (on a cluster, spilling to disk) brings each partition's rows together, table by table,
   and each partition is written as one file.
3. Every partition is read back through the contract, as every command will read it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from clv.common import dates
from clv.common.cluster import Runner
from clv.common.io import atomic_folder
from clv.data import contract
from clv.data.contract import DataContractError, DuplicateKeyError
from clv.data.layout import (
    ORACLE,
    Manifest,
    Part,
    PartitionedBank,
    part_name,
    partition_of,
    write_manifest,
    write_part,
)
from clv.data.warehouse import WarehouseBank

logger = logging.getLogger(__name__)

BLOCK_BYTES = 64 << 20
ORDER = ("customers", "products", "customer_metrics", "transactions")  # a table's links are known before it


@dataclass
class Known:
    """What the check of the tables read so far knows: ids to link to, and the data's last date."""

    customers: np.ndarray | None = None
    products: np.ndarray | None = None
    last_txn: int | None = None
    last_month: int | None = None
    seen: dict[str, list[np.ndarray]] = field(default_factory=dict)


def blocks(path: Path, name: str) -> Iterator[pa.Table]:
    """The file in blocks of rows, every contract column as text for CSV (the contract parses it)."""
    try:
        if path.suffix == ".parquet":
            for batch in pq.ParquetFile(path).iter_batches(batch_size=1 << 20):
                yield pa.Table.from_batches([batch])
            return
        header = pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=1 << 16)).schema.names
        types = {column: pa.string() for column in header}
        options = pa_csv.ConvertOptions(column_types=types, strings_can_be_null=True)
        reader = pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=BLOCK_BYTES), convert_options=options)
        for batch in reader:
            yield pa.Table.from_batches([batch])
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataContractError(f"{path}: cannot be read as {path.suffix[1:].upper()}: {exc}") from exc


def check_block(path: Path, name: str, table: pa.Table, first_row: int, known: Known, partitions: int) -> pd.DataFrame:
    """One block checked as the contract checks a whole file (its rows numbered from `first_row`), its links
    to what came before, and each row's partition."""
    if name == ORACLE:  # for evaluation only: kept beside its customers, typed, not part of the contract
        frame = table.to_pandas(date_as_object=False)
        frame["customer_id"] = pd.to_numeric(frame["customer_id"]).astype(np.int64)
        frame["as_of"] = pd.to_datetime(frame["as_of"])
        for column in [c for c in frame if c.startswith("expected_clv") or c == "churn_probability"]:
            frame[column] = pd.to_numeric(frame[column])
        frame["_part"] = partition_of(frame["customer_id"].to_numpy(np.int64), partitions, "hash")
        return frame
    frame = contract.check_frame(path, name, table, first_row)
    ids = frame["customer_id"].to_numpy(np.int64)
    if name != "customers" and known.customers is not None:
        contract.fail(
            path, "customer_id", ~contract.known(ids, known.customers), frame["customer_id"], "is not in customers"
        )
    if name == "transactions" and known.products is not None and "product_id" in frame:
        product = frame["product_id"]
        given = product.notna().to_numpy()
        unknown = given.copy()
        unknown[given] = ~contract.known(product[given].to_numpy(np.int64), known.products)
        contract.fail(path, "product_id", unknown, product, "is not in products")
    if name == "transactions":
        contract.check_dates(path, name, frame, 0)  # in the future; the others wait for the data's last date
    if name == "transactions" and frame["transaction_date"].notna().any():
        last = dates.to_day(frame["transaction_date"].max().date())
        known.last_txn = max(known.last_txn or last, last)
    if name == "customer_metrics" and len(frame):
        last = int(contract.month_numbers(frame["month"]).max())
        known.last_month = max(known.last_month or last, last)
    if name in ("customers", "products"):  # their ids are unique across the whole file, and linked to
        known.seen.setdefault(name, []).append(frame[contract.KEYS[name][0]].to_numpy(np.int64))
    frame["_part"] = partition_of(ids, partitions, "hash")
    return frame


def stage_table(path: Path, name: str, folder: Path, known: Known, partitions: int) -> int:
    """Check a whole table block by block and write its checked blocks into `folder`; the rows."""
    rows = 0
    for index, table in enumerate(blocks(path, name)):
        frame = check_block(path, name, table, rows, known, partitions)
        frame.to_parquet(folder / f"block-{index:05d}-{rows}.parquet", index=False)  # and its first row
        rows += len(frame)
    if name in known.seen:
        ids = np.concatenate(known.seen.pop(name)) if rows else np.zeros(0, np.int64)
        _unique(path, contract.KEYS[name][0], ids)
        setattr(known, name, ids)
    return rows


def _unique(path: Path, column: str, ids: np.ndarray) -> None:
    order = np.argsort(ids, kind="stable")
    repeated = order[1:][ids[order][1:] == ids[order][:-1]]
    if repeated.size:
        second = int(repeated.min())
        first = int(np.flatnonzero(ids == ids[second])[0])
        raise DataContractError(
            f"{path}: rows {first + 1:,} and {second + 1:,} have the same {column} '{ids[second]}': a duplicate key"
        )


def check_late(work: Path, paths: dict[str, Path], last_day: int) -> None:
    """Joins, starts and ends after the data's last date, known once every table was read: named by the
    source file and row, from the checked blocks."""
    for name in ("customers", "products"):
        for block in sorted((work / name).glob("block-*.parquet")) if name in paths else []:
            columns = [c for c in contract.LATE_DATES[name] if c in pq.ParquetFile(block).schema_arrow.names]
            frame = pd.read_parquet(block, columns=columns)
            first_row = int(block.stem.rsplit("-", 1)[1])
            frame.index = pd.RangeIndex(first_row, first_row + len(frame))
            contract.check_dates(paths[name], name, frame, last_day)


def shuffle_table(name: str, blocks_folder: Path, out: Path, partitions: int) -> list[dict]:
    """Dask's shuffle of one staged table by partition; each partition written as its own file."""
    import dask
    import dask.dataframe as dd

    frame = dd.read_parquet(str(blocks_folder))
    frame = frame.set_index("_part", divisions=list(range(partitions + 1)))
    writes = [dask.delayed(_write_partition)(part, out, name, i) for i, part in enumerate(frame.to_delayed())]
    return list(dask.compute(*writes))


def _write_partition(frame: pd.DataFrame, out: Path, name: str, index: int) -> dict:
    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    part = write_part(out, index, {name: table})
    return part.model_dump()


def prepare(src: Path, out: Path, partitions: int, runner: Runner) -> Manifest:
    """The flat bank in `src` as a partitioned bank in `out`, written whole or not at all."""
    paths = contract.find_tables(src)
    oracle = contract.find_table(Path(src), ORACLE)
    known = Known()
    with atomic_folder(out) as folder:
        work = folder / ".blocks"
        for name in [n for n in ORDER if n in paths] + ([ORACLE] if oracle else []):
            (work / name).mkdir(parents=True)
            rows = stage_table(paths.get(name, oracle), name, work / name, known, partitions)
            logger.info("checked %s rows of %s", f"{rows:,}", paths.get(name, oracle))
        last_day = dates.data_last_day(known.last_txn, known.last_month)
        check_late(work, paths, last_day)
        parts = [{"name": part_name(i), "rows": {}, "sha256": {}, "bytes": {}} for i in range(partitions)]
        for name in [n for n in ORDER if n in paths] + ([ORACLE] if oracle else []):
            for written in shuffle_table(name, work / name, folder, partitions):
                part = parts[int(written["name"].split("-")[1])]
                for field in ("rows", "sha256", "bytes"):
                    part[field] |= written[field]
        shutil.rmtree(work)
        manifest = Manifest.of([Part(**p) for p in parts], "hash", last_day)
        write_manifest(folder, manifest)
        _check_partitions(PartitionedBank(folder, manifest), runner, paths)
    return manifest


def _check_partitions(bank: PartitionedBank, runner: Runner, paths: dict[str, Path]) -> None:
    """Every partition through the contract. The blocks were checked already; what only a whole customer
    shows (a ledger month given twice) is named by its key, in the source file."""
    try:
        runner.map(_load, bank, label="checked")
    except DuplicateKeyError as exc:
        raise DataContractError(f"{paths[exc.table]}: {exc.key} appears twice: a duplicate key") from None


def _load(bank: PartitionedBank, part: str) -> None:
    bank.load(part)


def export(source: WarehouseBank, out: Path, runner: Runner) -> Manifest:
    """A database's bank, as its command's one snapshot sees it, as a partitioned bank in `out` (written whole or
    not at all): each range of customers is read and checked by the contract as every command reads it, then
    written as one partition; the manifest's rule "range" keeps the ranges' bounds."""
    with atomic_folder(out) as folder:
        parts = runner.map(_export_part, source, label="exported", folder=folder)
        manifest = Manifest.of(parts, "range", source.last_day, bounds=list(source.bounds))
        write_manifest(folder, manifest)
    return manifest


def _export_part(source: WarehouseBank, part: str, folder: Path) -> Part:
    return write_part(folder, source.parts.index(part), source.checked(part)[0])
