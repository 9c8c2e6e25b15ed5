"""Where a bank lives on disk, as parts: a flat folder (the contract's CSV or Parquet files) is one part; a
partitioned bank is a folder of Parquet datasets co-partitioned by customer, with a manifest.

```
bank/manifest.json                 layout version, partitions, the rule, last date, row counts, checksums
bank/customers/part-00000.parquet  ... one file per partition in each table's folder: every row of a
bank/transactions/part-00000.parquet   disjoint set of customers, the same set across the tables
```
Every command works part by part: a runner (clv.common.cluster) calls `function(source, part, ...)` for each
part, and the function loads the part's tables with `source.load(part)`, in whatever process runs it.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import re
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from clv.common import dates
from clv.common.io import atomic_path, fingerprint, sha256, write_json
from clv.data.bank import Bank, Keep, bank_from_tables, load_bank, only
from clv.data.contract import DataContractError, find_table, read_tables
from clv.data.location import Location, WarehouseURL, parse_location
from clv.data.schema import DELTA, TABLES
from clv.data.warehouse import WarehouseBank

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
GENERATED = "generator.json"  # beside a flat synthetic bank's tables: the generator's settings
LAYOUT_VERSION = 1
ORACLE = "oracle_clv"


def partition_of(customer_id: np.ndarray, partitions: int, rule: str, bounds: list[int] | None = None) -> np.ndarray:
    """The partition each customer belongs to. "modulo": the id modulo the count (the generator's ids are
    1..N, so each partition is every P-th customer). "hash": a 64-bit mix of the id modulo the count, so
    that any ids, in any order, fall into partitions that are random samples. "range": the ranges of ids a
    database's bank was read in (`bounds`: each partition's highest id; the last takes every id above)."""
    if rule == "range":
        return np.minimum(np.searchsorted(np.asarray(bounds), np.asarray(customer_id), side="left"), partitions - 1)
    ids = np.asarray(customer_id).astype(np.uint64)
    if rule == "modulo":
        return (ids % np.uint64(partitions)).astype(np.int64)
    mixed = (ids + np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)  # splitmix64, wraps mod 2**64
    mixed ^= mixed >> np.uint64(31)
    mixed *= np.uint64(0x94D049BB133111EB)
    mixed ^= mixed >> np.uint64(29)
    return (mixed % np.uint64(partitions)).astype(np.int64)


class Part(BaseModel):
    """One partition: its rows, and each file's SHA-256 and size (checked whenever the file is read)."""

    name: str
    rows: dict[str, int]
    sha256: dict[str, str]
    bytes: dict[str, int] = {}  # absent from the manifests of layout 1's first banks: their sums are checked


class Manifest(BaseModel):
    """manifest.json of a partitioned bank."""

    layout: Literal["clv-partitioned"] = "clv-partitioned"
    version: int = LAYOUT_VERSION
    partitions: int
    rule: Literal["modulo", "hash", "range"]
    last_date: dates.dt.date
    tables: dict[str, int]
    parts: list[Part]
    generator: dict | None = None  # the synthetic bank's settings, when the generator made it
    bounds: list[int] | None = None  # rule "range": each partition's highest customer id

    @classmethod
    def of(
        cls,
        parts: list[Part],
        rule: str,
        last_day: int,
        generator: dict | None = None,
        bounds: list[int] | None = None,
    ) -> Manifest:
        names = sorted({name for part in parts for name in part.rows})
        totals = {name: sum(part.rows.get(name, 0) for part in parts) for name in names}
        last = dates.from_day(last_day)
        return cls(
            partitions=len(parts),
            rule=rule,
            last_date=last,
            tables=totals,
            parts=parts,
            generator=generator,
            bounds=bounds,
        )


def part_name(index: int) -> str:
    return f"part-{index:05d}"


def is_partitioned(data_dir: Location | str) -> bool:
    """Whether the bank is read part by part (on a cluster): a folder with a manifest, or a database."""
    location = parse_location(data_dir)
    return isinstance(location, WarehouseURL) or (location / MANIFEST).is_file()


def source_customers(data_dir: Path) -> int:
    """About how many customers a flat folder holds, from its customers file's rows (or its size)."""
    path = find_table(Path(data_dir), "customers")
    if path is None:
        found = find_table(Path(data_dir), "transactions")
        return 1 if found is None else max(1, found.stat().st_size // 20_000)  # some 200 transactions a customer
    if path.suffix == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    with path.open("rb") as handle:
        return max(1, sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 24), b"")) - 1)


@dataclass(frozen=True)
class FlatBank:
    """A folder of the contract's files: one part, read whole."""

    data_dir: Path

    @property
    def parts(self) -> list[str]:
        return [""]

    def load(self, part: str = "", keep: Keep | None = None) -> tuple[Bank, Oracle | None]:
        """The part's Bank (of the customers `keep` picks, when given), and the oracle's expected values when the
        folder has them."""
        files = sorted(self.data_dir.glob("*.*"))
        bank, oracle = _read_flat(self.data_dir, tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))
        return (bank if keep is None else only(bank, keep(bank.customer_id))), oracle

    @functools.cached_property
    def last_day(self) -> int:
        return self.load()[0].last_day()

    @functools.cached_property
    def fingerprint(self) -> str:
        paths = [find_table(self.data_dir, name) for name in TABLES]
        return fingerprint([p for p in paths if p is not None])

    def customers_in(self, parts: list[str]) -> int:
        return self.load()[0].size

    @property
    def synthetic(self) -> bool:
        return (self.data_dir / GENERATED).is_file()


@functools.lru_cache(maxsize=1)
def _read_flat(data_dir: Path, files: tuple) -> tuple[Bank, Oracle | None]:
    """The folder read once while its files stay the same: training reads its rows, then its held-out
    customers."""
    path = find_table(Path(data_dir), ORACLE)
    return load_bank(data_dir), None if path is None else _oracle(path)


def _oracle(path: Path) -> Oracle:
    """oracle_clv by customer id, with its as-of date."""
    oracle = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    as_of = pd.Timestamp(oracle["as_of"].iloc[0]).date() if len(oracle) else None
    values = oracle.set_index("customer_id")
    churn = values.get("churn_probability")  # a DataFrame's column, or None
    horizons = {int(match[1]): values[name] for name in values if (match := re.fullmatch(r"expected_clv_(\d+)m", name))}
    return Oracle(as_of, values["expected_clv"], churn, horizons)


@dataclass(frozen=True)
class Oracle:
    """What a generated bank knows of each customer's hidden state as of a date: the expected value of the
    months after it (the headline's, and other horizons'), and the probability of leaving (NaN for who cannot; none
    in an older bank's oracle)."""

    as_of: dt.date | None
    expected_clv: pd.Series
    churn_probability: pd.Series | None
    horizons: dict[int, pd.Series] = field(default_factory=dict)  # the expected value of other horizons, by months


@dataclass(frozen=True)
class PartitionedBank:
    """A partitioned bank: each part read and checked alone, against the bank's last date and rule."""

    data_dir: Path
    manifest: Manifest

    @classmethod
    def open(cls, data_dir: Path) -> PartitionedBank:
        path = Path(data_dir) / MANIFEST
        try:
            manifest = Manifest.model_validate_json(path.read_text())
        except (OSError, ValueError) as exc:
            raise DataContractError(f"{path}: not a readable manifest of a partitioned bank ({exc})") from None
        return cls(Path(data_dir), manifest)

    @property
    def parts(self) -> list[str]:
        return [part.name for part in self.manifest.parts]

    @property
    def last_day(self) -> int:
        return dates.to_day(self.manifest.last_date)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.manifest.model_dump_json().encode()).hexdigest()

    def customers_in(self, parts: list[str]) -> int:
        rows = {part.name: part.rows.get("customers", 0) for part in self.manifest.parts}
        return sum(rows[name] for name in parts)

    @property
    def synthetic(self) -> bool:
        return self.manifest.generator is not None

    def paths(self, part: str) -> dict[str, Path]:
        listed = next(p for p in self.manifest.parts if p.name == part).rows
        return {name: self.data_dir / name / f"{part}.parquet" for name in listed if name != ORACLE}

    def load(self, part: str, keep: Keep | None = None) -> tuple[Bank, Oracle | None]:
        """The part's Bank, every file checked whole: of the customers `keep` picks alone, when given (the others'
        rows are dropped before the Bank is built); and the oracle's expected values when the bank has them."""
        index = self.parts.index(part)
        rule, count, bounds = self.manifest.rule, self.manifest.partitions, self.manifest.bounds
        paths = self.paths(part)
        self.verify(part, paths)
        tables = read_tables(paths, self.last_day, lambda ids: partition_of(ids, count, rule, bounds) == index)
        bank = bank_from_tables(tables, keep, float(self.last_day))  # balances as of the bank's last date
        oracle = self.data_dir / ORACLE / f"{part}.parquet"
        if not oracle.exists():
            return bank, None
        self.verify(part, {ORACLE: oracle})
        return bank, _oracle(oracle)

    def verify(self, part: str, paths: dict[str, Path]) -> None:
        """Each file as the manifest wrote it: its size (a truncated copy), then its SHA-256 (any change)."""
        listed = self.manifest.parts[self.parts.index(part)]
        for name, path in paths.items():
            try:
                size = path.stat().st_size
            except OSError as exc:
                raise DataContractError(f"{path}: cannot be read ({exc.strerror})") from None
            expected = listed.bytes.get(name)
            if expected is not None and size != expected:
                raise DataContractError(
                    f"{path}: {size:,} bytes where the manifest wrote {expected:,}: truncated or replaced since the "
                    "bank was written; write the bank again (data_gen.py or model.py prepare)"
                )
            if name in listed.sha256 and sha256(path) != listed.sha256[name]:
                raise DataContractError(
                    f"{path}: its SHA-256 is not the manifest's: changed since the bank was written; write the bank "
                    "again (data_gen.py or model.py prepare)"
                )


Source = FlatBank | PartitionedBank | WarehouseBank
_WAREHOUSES: weakref.WeakValueDictionary[WarehouseURL, WarehouseBank] = weakref.WeakValueDictionary()


def open_bank(data_dir: Location | str) -> Source:
    """The bank at a location: a PostgreSQL URL's schema (read in ranges of customers from one snapshot), a
    partitioned folder (it has a manifest), or a folder of the contract's flat files."""
    location = parse_location(data_dir)
    if isinstance(location, WarehouseURL):
        # one snapshot a command: while its bank is open (backtest's), training at each cutoff reads the same one
        bank = _WAREHOUSES.get(location)
        if bank is None or not bank.is_open:
            bank = _WAREHOUSES[location] = WarehouseBank.open(location)
        return bank
    return PartitionedBank.open(location) if is_partitioned(location) else FlatBank(location)


# ---- writing a bank's Parquet files ----------------------------------------------------------------------


def write_parquet(name: str, table: pa.Table, path: Path) -> None:
    """A bank's table as one Parquet file, each column encoded as the contract says (`Column.encoding`). Against
    Parquet's default dictionaries, which a unique key and the amounts overflow, a part's transactions file writes a
    quarter faster, reads a third faster and is a third smaller. Pages are compressed with LZ4 (Parquet's LZ4_RAW
    codec): as small as Snappy's, and a part's transactions and ledger read in 0.11 s against 0.18 s."""
    types = dict(zip(table.column_names, table.schema.types, strict=True))
    encodings, categories = {}, set()
    for column in TABLES.get(name, ()):
        kind = types.get(column.name)
        # a delta is of whole numbers alone: a column of another type keeps Parquet's default
        if column.encoding and kind is not None and (column.encoding != DELTA or pa.types.is_integer(kind)):
            encodings[column.name] = column.encoding
        if column.kind in ("category", "month"):
            categories.add(column.name)
    dictionary = [column for column in table.column_names if column not in encodings]
    # a category's least and greatest label would help no reader, and cost a third of writing its column
    statistics = [column for column in table.column_names if column not in categories]
    pq.write_table(
        table,
        path,
        compression="lz4",
        use_dictionary=dictionary,
        column_encoding=encodings or None,
        write_statistics=statistics,
    )


def write_part(folder: Path, index: int, tables: dict[str, pa.Table]) -> Part:
    """One partition's tables as Parquet files in `folder` (a staging folder), with their checksums."""
    name = part_name(index)
    rows, sums, sizes = {}, {}, {}
    for table_name, table in tables.items():
        path = folder / table_name / f"{name}.parquet"
        path.parent.mkdir(exist_ok=True)
        with atomic_path(path) as tmp:  # a rerun of the same partition (a worker lost) rewrites it whole
            write_parquet(table_name, table, tmp)
        rows[table_name], sums[table_name], sizes[table_name] = table.num_rows, sha256(path), path.stat().st_size
    return Part(name=name, rows=rows, sha256=sums, bytes=sizes)


def write_manifest(folder: Path, manifest: Manifest) -> None:
    write_json(manifest.model_dump(mode="json"), folder / MANIFEST)
