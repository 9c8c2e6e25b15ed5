"""The data contract: read a bank's tables (CSV or Parquet) and refuse a broken file before any work.

Every refusal names the file, the column, the row (1-based, header excluded) and the rule. A flat folder
is read whole (`read_bank`); a partition of a partitioned bank is read the same way (`read_tables`), with
the bank's last date and the rule that says which customers belong to the partition.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from clv.common import dates
from clv.data.schema import REQUIRED_TABLES, TABLES, Column

logger = logging.getLogger(__name__)

KEYS = {
    "customers": ("customer_id",),
    "products": ("product_id",),
    "transactions": ("transaction_id",),
    "customer_metrics": ("customer_id", "month"),
}
DATE_RULE = "is not a date (YYYY-MM-DD)"
MONTH_RULE = "is not a month (YYYY-MM)"


class DataContractError(ValueError):
    """A file breaks the data contract; the message says which file, row, column and rule."""


class DuplicateKeyError(DataContractError):
    """Two rows of a table share its key; `key` names it (e.g. "customer_id '17', month '2024-03'")."""

    def __init__(self, message: str, table: str, key: str) -> None:
        super().__init__(message)
        self.table, self.key = table, key

    def __reduce__(self) -> tuple:  # raised on a Dask worker, re-raised here whole
        return type(self), (str(self), self.table, self.key)


class RowError(DataContractError):
    """One row breaks a rule: `label` (the file or table), `column`, `position` (0-based in what was read), the
    `value` shown and the `rule`; a database names the row by its key instead of its number (clv.data.warehouse)."""

    def __init__(self, message: str, label: str, column: str, position: int, value: object, rule: str) -> None:
        super().__init__(message)
        self.label, self.column, self.position, self.value, self.rule = label, column, position, value, rule

    def __reduce__(self) -> tuple:
        return type(self), (str(self), self.label, self.column, self.position, self.value, self.rule)


def find_table(data_dir: Path, name: str) -> Path | None:
    for suffix in (".csv", ".parquet"):
        path = data_dir / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def _read(path: Path, threads: bool = True) -> pa.Table:
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path, use_threads=threads)
        options = pa_csv.ConvertOptions(strings_can_be_null=True, auto_dict_encode=True, auto_dict_max_cardinality=64)
        return pa_csv.read_csv(path, convert_options=options)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataContractError(f"{path}: cannot be read as {path.suffix[1:].upper()}: {exc}") from exc


def fail(path: Path, column: str, mask: np.ndarray, raw: pd.Series, rule: str) -> None:
    """Refuse the first row where `mask` holds, by its number in the file (the Series' index counts rows)."""
    if mask.any():
        position = int(np.flatnonzero(mask)[0])
        value = raw.iloc[position]
        shown = value.date() if isinstance(value, pd.Timestamp) else value
        message = f"{path}: column '{column}' row {raw.index[position] + 1:,}: '{shown}' {rule}"
        raise RowError(message, str(path), column, int(raw.index[position]), shown, rule)


def _kept_by_type(path: Path | str, column: Column, values: pa.ChunkedArray) -> bool:
    """Whether an Arrow column keeps its rule as it is, checked over whole arrays: a Parquet file's or a database's
    typed column, a clean CSV one. Its pandas column is then what the row checks (_check_column) would return. False
    sends it to them, which name the first row that breaks the rule, or convert it (text to numbers, ints with gaps)."""
    kind, arrow = column.kind, values.type
    if values.null_count and column.required and not column.nullable:
        return False
    if kind in ("int", "float") and pa.types.is_integer(arrow):
        return not values.null_count  # whole and finite by its type; with gaps pandas makes floats of them
    if kind == "float" and pa.types.is_floating(arrow):
        infinite = pc.any(pc.is_inf(values)).as_py()
        return not infinite and (column.nullable or not pc.any(pc.is_nan(values)).as_py())  # NaN is a gap to pandas
    if kind == "date":
        return pa.types.is_date(arrow)  # whole days by its type
    if kind == "month":
        if not pa.types.is_dictionary(arrow):
            return False
        labels = pa.chunked_array([chunk.dictionary for chunk in values.chunks], arrow.value_type)
        return pc.all(pc.match_substring_regex(labels, f"^{MONTH}$")).as_py() in (True, None)  # None: no labels
    if kind == "category":
        if not (pa.types.is_dictionary(arrow) or pa.types.is_string(arrow) or pa.types.is_large_string(arrow)):
            return False
        if not _members_only(values, column):
            seen = values.unique()
            seen = seen.dictionary_decode() if pa.types.is_dictionary(seen.type) else seen
            _warn_unknown(path, column, {str(value) for value in seen.to_pylist() if value is not None})
        return True
    return kind == "str"


def _members(column: Column) -> set[str] | None:
    """A category's member labels, None for a column without a fixed set."""
    return None if column.enum is None else {member.value for member in column.enum}


def _members_only(values: pa.ChunkedArray, column: Column) -> bool:
    """Whether no row can hold a value outside the category's members, without a pass over the rows: it has no
    fixed set, or the column's dictionaries hold members alone."""
    members = _members(column)
    if members is None:
        return True
    if not pa.types.is_dictionary(values.type):
        return False
    return all(label in members for chunk in values.chunks for label in chunk.dictionary.to_pylist())


def _check_column(path: Path, column: Column, values: pd.Series) -> pd.Series:
    """Convert one column to its contract type, or raise naming the first row that breaks it."""
    present = values.notna().to_numpy()
    if not column.nullable and column.required and not present.all():
        row = int(values.index[int(np.flatnonzero(~present)[0])])
        message = f"{path}: column '{column.name}' row {row + 1:,}: is empty but required"
        raise RowError(message, str(path), column.name, row, None, "is empty but required")
    check = {"int": _numbers, "float": _numbers, "date": _dates, "month": _months, "category": _categories}
    return check[column.kind](path, column, values, present) if column.kind in check else values


def _numbers(path: Path, column: Column, values: pd.Series, present: np.ndarray) -> pd.Series:
    if pd.api.types.is_integer_dtype(values):
        return values  # whole and finite by its type
    numeric = pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype)
    number = (values if numeric else pd.to_numeric(values.astype("string"), errors="coerce")).astype(np.float64)
    finite = np.isfinite(number.to_numpy())
    fail(path, column.name, present & ~finite, values, "is not a finite number")
    if column.kind == "int":
        as_array = number.to_numpy()
        whole = finite & (np.floor(as_array) == as_array)
        fail(path, column.name, present & ~whole, values, "is not a whole number")
        return number.astype("Int64") if not present.all() else number.astype(np.int64)
    return number


def _dates(path: Path, column: Column, values: pd.Series, present: np.ndarray) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    else:
        parsed = pd.to_datetime(values.astype("string"), errors="coerce", format="ISO8601", utc=False)
    if hasattr(parsed.dt, "tz") and parsed.dt.tz is not None:
        parsed = parsed.dt.tz_localize(None)
    fail(path, column.name, present & parsed.isna().to_numpy(), values, DATE_RULE)
    stamps = parsed.to_numpy()
    if ((stamps.astype("datetime64[D]") == stamps) | ~present).all():
        return parsed  # already whole days (a Parquet date, a date-only text)
    return parsed.dt.normalize()


MONTH = r"\d{4}-(0[1-9]|1[0-2])"


def _months(path: Path, column: Column, values: pd.Series, present: np.ndarray) -> pd.Series:
    if isinstance(values.dtype, pd.CategoricalDtype):  # each label checked once, not each row
        labels = pd.Series(values.cat.categories.astype(str))
        bad = np.flatnonzero(~labels.str.fullmatch(MONTH).to_numpy(bool))
        fail(path, column.name, present & np.isin(values.cat.codes.to_numpy(), bad), values, MONTH_RULE)
        return values
    text = values.astype("string")
    ok = text.str.fullmatch(MONTH).fillna(False).to_numpy(bool)
    fail(path, column.name, present & ~ok, values, MONTH_RULE)
    return text


def _categories(path: Path, column: Column, values: pd.Series, present: np.ndarray) -> pd.Series:
    _warn_unknown(path, column, set(pd.Series(values.dropna().unique()).astype(str)))
    return values


def _warn_unknown(path: Path | str, column: Column, seen: set[str]) -> None:
    """Values outside a category's members are scored as unknown, with a warning naming a few."""
    allowed = _members(column)
    if allowed is None:
        return
    unknown = sorted(seen - allowed)
    if unknown:
        logger.warning(
            "%s: column '%s' has values outside %s, scored as unknown: %s",
            path,
            column.name,
            sorted(allowed),
            unknown[:5],
        )


def read_table(path: Path, name: str, threads: bool = True) -> pd.DataFrame:
    """One file read and checked; `threads` False where other processes have the other cores."""
    return check_frame(path, name, _read(path, threads))


def check_frame(path: Path | str, name: str, table: pa.Table, first_row: int = 0) -> pd.DataFrame:
    """The contract's table `name` from an Arrow table of its file (rows `first_row` on), checked and typed."""
    contract = {c.name: c for c in TABLES[name]}
    missing = [c for c in contract.values() if c.required and c.name not in table.column_names]
    if missing:
        raise DataContractError(f"{path}: missing required column '{missing[0].name}'")
    extra = [c for c in table.column_names if c not in contract]
    if extra:
        logger.warning("%s: ignoring columns not in the contract: %s", path, ", ".join(extra))
        table = table.drop_columns(extra)
    frame = table.to_pandas(date_as_object=False, split_blocks=True)  # a block a column: no copy into 2-D blocks
    if first_row:
        frame.index = pd.RangeIndex(first_row, first_row + len(frame))
    for column in contract.values():
        if column.name in frame and not _kept_by_type(path, column, table.column(column.name)):
            frame[column.name] = _check_column(path, column, frame[column.name])
    _check_key(path, name, frame)
    return frame


def _check_key(path: Path, name: str, frame: pd.DataFrame) -> None:
    """No two rows share the table's key (an id, or a customer's month in the ledger)."""
    columns = KEYS[name]
    if not all(column in frame for column in columns) or frame.empty:
        return
    key = _key(frame, columns)
    if key is None:  # ids too large to pack with the month: let pandas compare the columns
        later = frame.duplicated(list(columns)).to_numpy()
    elif (key[1:] > key[:-1]).all():
        return  # written in key order, as the generator writes: nothing repeats
    else:
        order = np.argsort(key, kind="stable")
        later = np.zeros(key.size, bool)
        later[order[1:][key[order][1:] == key[order][:-1]]] = True
    if later.any():
        second = int(np.flatnonzero(later)[0])
        same = (frame[list(columns)] == frame.iloc[second][list(columns)]).all(axis=1).to_numpy()
        first = int(np.flatnonzero(same)[0])
        shown = ", ".join(f"{column} '{frame[column].iloc[second]}'" for column in columns)
        rows = f"rows {frame.index[first] + 1:,} and {frame.index[second] + 1:,}"
        raise DuplicateKeyError(f"{path}: {rows} have the same {shown}: a duplicate key", name, shown)


def _key(frame: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray | None:
    """The key as one int64 per row (a customer's month packed as month * 2**40 + id), or None."""
    ids = frame[columns[0]].to_numpy()
    if ids.dtype.kind not in "iu":
        return None
    if len(columns) == 1:
        return ids.astype(np.int64, copy=False)
    if ids.min() < 0 or ids.max() >= 2**40:
        return None
    return month_numbers(frame[columns[1]]) * 2**40 + ids


def month_numbers(values: pd.Series) -> np.ndarray:
    """'YYYY-MM' labels (text or categories) as months since 1970-01."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        labels = np.asarray(values.cat.categories.astype(str), "datetime64[M]").astype(np.int64)
        return labels[values.cat.codes.to_numpy()]
    return values.to_numpy(str).astype("datetime64[M]").astype(np.int64)


def find_tables(data_dir: Path) -> dict[str, Path]:
    """The contract's files in a flat folder; transactions are required."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataContractError(f"{data_dir}: no such folder")
    paths = {name: find_table(data_dir, name) for name in TABLES}
    for name in REQUIRED_TABLES:
        if paths[name] is None:
            raise DataContractError(f"{data_dir}: missing {name}.csv (or {name}.parquet), the one required file")
    return {name: path for name, path in paths.items() if path is not None}


def read_bank(data_dir: Path) -> dict[str, pd.DataFrame]:
    """Read and check every table of a flat folder; transactions are required, the rest optional."""
    return read_tables(find_tables(data_dir))


def read_tables(
    paths: dict[str, Path], last_day: int | None = None, belongs: Callable[[np.ndarray], np.ndarray] | None = None
) -> dict[str, pd.DataFrame]:
    """Read and check the named files: each one alone, then the links between them. `last_day` is the
    bank's last date when these are one partition of it (default: their own); `belongs(ids)` says which
    customer ids the partition may hold."""
    tables = {name: read_table(path, name, threads=belongs is None) for name, path in paths.items()}
    return check_read(tables, paths, last_day, belongs)


def check_read(
    tables: dict[str, pd.DataFrame],
    paths: dict[str, Path | str],
    last_day: int | None = None,
    belongs: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, pd.DataFrame]:
    """Tables each checked alone (check_frame), now checked together: the partition's customers, the links."""
    if belongs is not None:  # the other tables' customers must be in customers, checked below
        for name in ["customers"] if "customers" in tables else list(tables):
            ids = tables[name]["customer_id"]
            fail(paths[name], "customer_id", ~belongs(ids.to_numpy(np.int64)), ids, "belongs to another partition")
    _check_links(tables, paths, last_day)
    return tables


def data_last_day(tables: dict[str, pd.DataFrame]) -> int:
    """The tables' last date: their last transaction, or the end of their last ledger month."""
    ledger = tables.get("customer_metrics")
    last_month = int(month_numbers(ledger["month"]).max()) if ledger is not None and len(ledger) else None
    last_txn = tables["transactions"]["transaction_date"].max()
    return dates.data_last_day(None if pd.isna(last_txn) else dates.to_day(last_txn.date()), last_month)


TABLE_BYTES = 16  # a lookup table over ids' range may take this much memory a row it serves, two int64 columns' worth


def dense_ids(ids: np.ndarray, rows: int, entry_bytes: int = 1) -> bool:
    """Integer ids close enough together that a lookup table over their range (`entry_bytes` an entry) beats sorting
    or hashing: it takes at most TABLE_BYTES a row it serves (the ids and the `rows` looked up in it), and 16 KiB
    more. A partition's ids are spread over the whole bank's range, but its millions of transactions pay for the
    table; a few customers with ids far apart (a small bank numbered by account) do not."""
    if ids.dtype.kind not in "iu" or not ids.size:
        return False
    return (int(ids.max()) - int(ids.min()) + 1) * entry_bytes <= TABLE_BYTES * (ids.size + rows) + 16384


def known(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """np.isin for integer ids: a lookup table when the ids are dense for the rows looked up (millions of rows in a
    blink), also where numpy's own rule (6 bytes a row) would sort them: a partition's ledger."""
    if values.dtype.kind in "iu" and dense_ids(known, values.size):
        return np.isin(values, known, kind="table")
    return np.isin(values, known)


def _check_links(tables: dict[str, pd.DataFrame], paths: dict[str, Path], last_day: int | None = None) -> None:
    """Rows point to known customers and products; no date lies after the data's last date."""
    customers = tables.get("customers")
    if customers is not None:
        customer_ids = customers["customer_id"].to_numpy()
        for name in ("products", "transactions", "customer_metrics"):
            if name in tables:
                ids = tables[name]["customer_id"]
                fail(paths[name], "customer_id", ~known(ids.to_numpy(), customer_ids), ids, "is not in customers")
    products = tables.get("products")
    txns = tables["transactions"]
    if products is not None and "product_id" in txns:
        ids = txns["product_id"]
        present = ids.notna().to_numpy()
        unknown = present.copy()
        unknown[present] = ~known(ids[present].to_numpy(np.int64), products["product_id"].to_numpy(np.int64))
        fail(paths["transactions"], "product_id", unknown, ids, "is not in products")
    last_day = data_last_day(tables) if last_day is None else last_day
    for name, frame in tables.items():
        check_dates(paths[name], name, frame, last_day)


LATE_DATES = {
    "transactions": ("transaction_date",),
    "customers": ("join_date",),
    "products": ("start_date", "end_date"),
}


def check_dates(path: Path, name: str, frame: pd.DataFrame, last_day: int) -> None:
    """No transaction in the future; no join, start or end after the data's last date."""
    last = pd.Timestamp(dates.from_day(last_day))
    for column in LATE_DATES.get(name, ()):
        if column not in frame:
            continue
        limit = pd.Timestamp(dt.date.today()) if name == "transactions" else last
        rule = "is in the future" if name == "transactions" else f"is after the data's last date {last.date()}"
        fail(path, column, (frame[column] > limit).to_numpy(bool), frame[column], rule)
