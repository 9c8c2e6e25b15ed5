"""A bank in PostgreSQL, read as parts: each part is a range of customer ids, read on its own connection (in
whatever process runs it) as Arrow through ADBC's COPY, from the one snapshot the command's coordinator exported,
and checked by the same contract as files. Rows are named by their key, never by a row number.

The four tables of the URL's schema hold the files' columns in warehouse types: BIGINT ids, INTEGER ages and
scores, NUMERIC money (read as text, never through a float before the contract sees it), DATE or TIMESTAMP[TZ]
dates, TEXT categories, the ledger's month as a DATE (its first day) or TEXT 'YYYY-MM'.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import weakref
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from clv.common import dates
from clv.data.bank import Bank, Keep, bank_from_tables
from clv.data.contract import KEYS, DataContractError, DuplicateKeyError, RowError, check_frame, check_read
from clv.data.defaults import PARTITION_CUSTOMERS
from clv.data.location import WarehouseURL
from clv.data.postgres import Snapshot, WarehouseError, failing_as_one_line, reading, rows, table_columns
from clv.data.schema import REQUIRED_TABLES, TABLES

logger = logging.getLogger(__name__)

NEEDED = ("customers", *REQUIRED_TABLES)  # customers: the parts are ranges of its ids


def _contract_columns(url: WarehouseURL, found: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """The contract's columns each table has; a missing table or required column refused by its name."""
    for name in NEEDED:
        if name not in found:
            raise WarehouseError(f"{url}: no table {url.schema}.{name} (the bank's {name}, a required table)")
    selected = {}
    for name, present in found.items():
        for column in TABLES[name]:
            if column.required and column.name not in present:
                raise WarehouseError(f"{url}: table {url.schema}.{name} has no column '{column.name}' (required)")
        selected[name] = {c.name: present[c.name] for c in TABLES[name] if c.name in present}  # name: SQL type
    return selected


class WarehouseBank:
    """A PostgreSQL bank as parts (ranges of customer ids, one over every id below the first bound, the last over
    every id above the last one). Sent to workers by pickle without its coordinator's connection: the snapshot it
    exported stays open here for as long as this object lives (the command)."""

    def __init__(
        self,
        url: WarehouseURL,
        snapshot: str,
        bounds: tuple[int, ...],
        customers: tuple[int, ...],
        columns: dict[str, dict[str, str]],
        last_day: int,
        fingerprint: str,
        holder: Snapshot | None = None,
    ) -> None:
        self.url, self.snapshot, self.bounds, self.counts = url, snapshot, bounds, customers
        self.columns, self.last_day, self.fingerprint, self.holder = columns, last_day, fingerprint, holder
        if holder is not None:  # the snapshot ends with the command's last use of the bank
            weakref.finalize(self, holder.close)

    @classmethod
    def open(cls, url: WarehouseURL) -> WarehouseBank:
        """Export a snapshot, check the tables' columns, cut the customers into ranges and find the last date."""
        part_customers = url.part_customers or PARTITION_CUSTOMERS
        holder = Snapshot(url)
        try:
            cursor = holder.cursor
            columns = _contract_columns(url, table_columns(cursor, url, tuple(TABLES)))
            with failing_as_one_line(url, "cannot read the bank's outline"):
                cursor.execute("SET LOCAL TIME ZONE 'UTC'")  # a TIMESTAMPTZ's date is its UTC date, as in files
                counts = {name: rows(cursor, f"SELECT count(*) FROM {url.qualified(name)}")[0][0] for name in columns}
                parts = max(1, math.ceil(counts["customers"] / part_customers))
                cut = rows(
                    cursor,
                    f"SELECT max(customer_id), count(*) FROM (SELECT customer_id, ntile({parts}) OVER "
                    f"(ORDER BY customer_id) AS part FROM {url.qualified('customers')} WHERE customer_id IS NOT NULL) "
                    "AS cut GROUP BY part ORDER BY part",
                )
                last_txn = rows(cursor, f"SELECT max(transaction_date)::date FROM {url.qualified('transactions')}")
                last_month = None
                if "customer_metrics" in columns:
                    last_month = rows(cursor, f"SELECT max(month)::text FROM {url.qualified('customer_metrics')}")
            last_day = _last_day(url, last_txn[0][0], None if last_month is None else last_month[0][0])
            bounds = tuple(int(high) for high, _ in cut) or (0,)
            customers = tuple(int(n) for _, n in cut) or (0,)
            outline = {"url": str(url), "rows": counts, "bounds": bounds, "last_day": last_day}
            fingerprint = hashlib.sha256(json.dumps(outline, sort_keys=True).encode()).hexdigest()
            logger.info(
                "%s: %d customers in %d parts, data to %s", url, sum(customers), len(bounds), dates.from_day(last_day)
            )
            return cls(url, holder.id, bounds, customers, columns, last_day, fingerprint, holder)
        except BaseException:
            holder.close()
            raise

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"holder": None}  # the connection stays with the coordinator

    def close(self) -> None:
        """End the snapshot now (a command's end does it too); the parts can no longer be read."""
        if self.holder is not None:
            self.holder.close()
            self.holder = None

    @property
    def is_open(self) -> bool:
        return self.holder is not None

    @property
    def parts(self) -> list[str]:
        return [f"part-{index:05d}" for index in range(len(self.bounds))]

    def customers_in(self, parts: list[str]) -> int:
        return sum(self.counts[self.parts.index(part)] for part in parts)

    @property
    def synthetic(self) -> bool:
        return False

    def _where(self, index: int) -> str:
        """The part's customers: above the previous bound, up to its own; the first also takes a missing id (which
        the contract then refuses by the row's key) and the last every id above (refused unless in customers)."""
        last = len(self.bounds) - 1
        if index == 0:
            return "TRUE" if last == 0 else f"customer_id IS NULL OR customer_id <= {self.bounds[0]}"
        low = f"customer_id > {self.bounds[index - 1]}"
        return low if index == last else f"{low} AND customer_id <= {self.bounds[index]}"

    def label(self, name: str) -> str:
        return f"{self.url} table {self.url.schema}.{name}"

    def read(self, part: str) -> dict[str, pa.Table]:
        """The part's tables as Arrow, in the contract's types, from the command's snapshot."""
        where = self._where(self.parts.index(part))
        tables = {}
        with reading(self.url, self.snapshot) as cursor:
            for name, columns in self.columns.items():
                # NUMERIC as its exact text: libpq's text copies faster than the driver formats NUMERIC's digits
                select = ", ".join(
                    f'"{c}"::text AS "{c}"' if kind == "numeric" else f'"{c}"' for c, kind in columns.items()
                )
                with failing_as_one_line(self.url, f"cannot read table {self.url.schema}.{name}"):
                    cursor.execute(f"SELECT {select} FROM {self.url.qualified(name)} WHERE {where}")
                    numeric = frozenset(c for c, kind in columns.items() if kind == "numeric")
                    tables[name] = contract_types(name, cursor.fetch_arrow_table(), numeric, self.label(name))
        return tables

    def load(self, part: str, keep: Keep | None = None) -> tuple[Bank, None]:
        """The part's Bank, checked by the data contract (a bad row is named by its table, column and key): of the
        customers `keep` picks alone, when given."""
        # the balances describe the bank's last date, not this part's
        return bank_from_tables(self.checked(part)[1], keep, float(self.last_day)), None

    def checked(self, part: str) -> tuple[dict[str, pa.Table], dict[str, pd.DataFrame]]:
        """The part's tables as read (Arrow, in the contract's types) and as the data contract checked them; a bad
        row is named by its table, column and key."""
        labels = {name: self.label(name) for name in self.columns}
        try:
            tables = self.read(part)
        except RowError as exc:  # a NUMERIC NaN or infinity, found as its text
            raise DataContractError(_by_key(exc, dict.fromkeys(labels, exc.table), labels)) from None
        labels = {name: self.label(name) for name in tables}
        try:
            frames = {name: check_frame(labels[name], name, table) for name, table in tables.items()}
            check_read(frames, labels, self.last_day)
        except RowError as exc:
            raise DataContractError(_by_key(exc, tables, labels)) from None
        except DuplicateKeyError as exc:
            raise DataContractError(f"{labels[exc.table]}: two rows have the same {exc.key}: a duplicate key") from None
        return tables, frames


def _last_day(url: WarehouseURL, last_txn: Any, last_month: str | None) -> int:
    """The data's last date: its last transaction, or the end of its last ledger month."""
    month = None
    if last_month:
        try:
            month = int(np.datetime64(last_month[:7], "M").astype(np.int64))
        except ValueError:
            raise WarehouseError(
                f"{url} table {url.schema}.customer_metrics: column 'month': '{last_month}' is not a month (YYYY-MM)"
            ) from None
    return dates.data_last_day(None if last_txn is None else dates.to_day(last_txn), month)


def _by_key(exc: RowError, tables: dict[str, pa.Table], labels: dict[str, str]) -> str:
    """A RowError's message with the row named by its key in its table (the label says which table)."""
    name = next((n for n, label in labels.items() if label == exc.label), None)
    if name is None:
        return str(exc)
    table = tables[name]
    shown = []
    for column in (*KEYS[name], "customer_id"):
        if column in table.column_names and column not in (s.split(" ")[0] for s in shown):
            value = table.column(column)[exc.position].as_py()
            if value is not None:
                shown.append(f"{column} {value}")
        if len(shown) == len(KEYS[name]):
            break
    where = ", ".join(shown) or "a row without a key"
    value = "" if exc.value is None else f"'{exc.value}' "
    return f"{exc.label}: column '{exc.column}' at {where}: {value}{exc.rule}"


def _as_text(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """NUMERIC (an opaque text extension, or a decimal) as its exact text."""
    if isinstance(values.type, pa.BaseExtensionType):
        return pa.chunked_array([chunk.storage for chunk in values.chunks], values.type.storage_type)
    return values if pa.types.is_string(values.type) else pc.cast(values, pa.string())


def _months(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """A month as 'YYYY-MM' categories: a DATE or TIMESTAMP on its first day; another day is shown whole, so that
    the contract refuses it as not a month."""
    if not (pa.types.is_date(values.type) or pa.types.is_timestamp(values.type)):
        return values
    encoded = pc.dictionary_encode(values.combine_chunks())
    day = pc.cast(
        pc.cast(encoded.dictionary, pa.timestamp("s")) if pa.types.is_timestamp(values.type) else encoded.dictionary,
        pa.date32(),
    )
    first = pc.equal(pc.day(day), 1)
    labels = pc.if_else(first, pc.strftime(day, "%Y-%m"), pc.strftime(day, "%Y-%m-%d"))
    return pa.chunked_array([pa.DictionaryArray.from_arrays(encoded.indices, labels)])


def contract_types(name: str, table: pa.Table, as_text: frozenset[str] = frozenset(), label: str = "") -> pa.Table:
    """A table as the driver gave it, in the types the contract reads from files: NUMERIC's exact text parsed to the
    nearest double as a CSV's is (NaN and infinities stay, for the contract to refuse), months as 'YYYY-MM',
    categories dictionary-encoded."""
    kinds = {c.name: c.kind for c in TABLES[name]}
    columns = []
    for column_name, values in zip(table.column_names, table.columns, strict=True):
        kind = kinds[column_name]
        numeric = isinstance(values.type, pa.BaseExtensionType) or pa.types.is_decimal(values.type)
        numeric = numeric or (column_name in as_text and pa.types.is_string(values.type))
        if kind in ("int", "float") and numeric:
            text = _as_text(values)
            values = pc.cast(text, pa.float64())
            odd = pc.fill_null(
                pc.invert(pc.is_finite(values)), False
            )  # NaN and infinities: pandas would take NaN for empty
            if pc.any(odd).as_py():
                position = int(pc.index(odd, True).as_py())
                error = RowError(
                    f"{label}: column '{column_name}'",
                    label,
                    column_name,
                    position,
                    text[position].as_py(),
                    "is not a finite number",
                )
                error.table = table  # type: ignore[attr-defined]
                raise error
        elif kind == "month":
            values = _months(values)
        elif kind == "category" and pa.types.is_string(values.type):
            values = pc.dictionary_encode(values)
        columns.append(values)
    return pa.table(columns, names=table.column_names)
