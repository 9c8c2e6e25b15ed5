"""The data contract: read a bank's folder (CSV or Parquet) and refuse a broken file before any work.

Every refusal names the file, the column, the row (1-based, header excluded) and the rule.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from clv import dates
from clv.schema import REQUIRED_TABLES, TABLES, Column

logger = logging.getLogger(__name__)

ID_COLUMNS = {"customers": "customer_id", "products": "product_id", "transactions": "transaction_id"}
DATE_RULE = "is not a date (YYYY-MM-DD)"


class DataContractError(ValueError):
    """A file breaks the data contract; the message says which file, row, column and rule."""


def find_table(data_dir: Path, name: str) -> Path | None:
    for suffix in (".csv", ".parquet"):
        path = data_dir / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def _read(path: Path) -> pa.Table:
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        options = pa_csv.ConvertOptions(strings_can_be_null=True, auto_dict_encode=True, auto_dict_max_cardinality=64)
        return pa_csv.read_csv(path, convert_options=options)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataContractError(f"{path}: cannot be read as {path.suffix[1:].upper()}: {exc}") from exc


def _fail(path: Path, column: str, mask: np.ndarray, raw: pd.Series, rule: str) -> None:
    if mask.any():
        row = int(np.flatnonzero(mask)[0])
        value = raw.iloc[row]
        shown = value.date() if isinstance(value, pd.Timestamp) else value
        raise DataContractError(f"{path}: column '{column}' row {row + 1:,}: '{shown}' {rule}")


def _check_column(path: Path, column: Column, values: pd.Series) -> pd.Series:
    """Convert one column to its contract type, or raise naming the first row that breaks it."""
    present = values.notna().to_numpy()
    if not column.nullable and column.required and not present.all():
        row = int(np.flatnonzero(~present)[0])
        raise DataContractError(f"{path}: column '{column.name}' row {row + 1:,}: is empty but required")
    if column.kind in ("int", "float") and pd.api.types.is_integer_dtype(values):
        return values  # whole and finite by its type
    if column.kind in ("int", "float"):
        numeric = pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype)
        number = (values if numeric else pd.to_numeric(values.astype("string"), errors="coerce")).astype(np.float64)
        finite = np.isfinite(number.to_numpy())
        _fail(path, column.name, present & ~finite, values, "is not a finite number")
        if column.kind == "int":
            as_array = number.to_numpy()
            whole = finite & (np.floor(as_array) == as_array)
            _fail(path, column.name, present & ~whole, values, "is not a whole number")
            return number.astype("Int64") if not present.all() else number.astype(np.int64)
        return number
    if column.kind == "date":
        if pd.api.types.is_datetime64_any_dtype(values):
            parsed = values
        else:
            text = values.astype("string")
            parsed = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=False)
        if hasattr(parsed.dt, "tz") and parsed.dt.tz is not None:
            parsed = parsed.dt.tz_localize(None)
        _fail(path, column.name, present & parsed.isna().to_numpy(), values, DATE_RULE)
        return parsed.dt.normalize()
    if column.kind == "month":
        text = values.astype("string")
        ok = text.str.fullmatch(r"\d{4}-(0[1-9]|1[0-2])").fillna(False).to_numpy(bool)
        _fail(path, column.name, present & ~ok, values, "is not a month (YYYY-MM)")
        return text
    if column.kind == "category" and column.enum is not None:
        allowed = {m.value for m in column.enum}
        seen = set(pd.Series(values.dropna().unique()).astype(str))
        unknown = sorted(seen - allowed)
        if unknown:
            logger.warning("%s: column '%s' has values outside %s, scored as unknown: %s",
                           path, column.name, sorted(allowed), unknown[:5])  # fmt: skip
    return values


def read_table(path: Path, name: str) -> pd.DataFrame:
    contract = {c.name: c for c in TABLES[name]}
    table = _read(path)
    missing = [c for c in contract.values() if c.required and c.name not in table.column_names]
    if missing:
        raise DataContractError(f"{path}: missing required column '{missing[0].name}'")
    extra = [c for c in table.column_names if c not in contract]
    if extra:
        logger.warning("%s: ignoring columns not in the contract: %s", path, ", ".join(extra))
        table = table.drop_columns(extra)
    frame = table.to_pandas(date_as_object=False)
    for column in contract.values():
        if column.name in frame:
            frame[column.name] = _check_column(path, column, frame[column.name])
    id_column = ID_COLUMNS.get(name)
    if id_column in frame:
        ids = frame[id_column]
        if not (ids.is_monotonic_increasing and ids.is_unique):  # ids written in order: nothing to look up
            _fail(path, id_column, ids.duplicated().to_numpy(), ids, "is a duplicate id")
    return frame


def read_bank(data_dir: Path) -> dict[str, pd.DataFrame]:
    """Read and check every table of a folder; transactions are required, the rest optional."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataContractError(f"{data_dir}: no such folder")
    paths = {name: find_table(data_dir, name) for name in TABLES}
    for name in REQUIRED_TABLES:
        if paths[name] is None:
            raise DataContractError(f"{data_dir}: missing {name}.csv (or {name}.parquet), the one required file")
    tables = {name: read_table(path, name) for name, path in paths.items() if path is not None}
    _check_links(tables, paths)
    return tables


def dense_ids(ids: np.ndarray) -> bool:
    """Integer ids close enough together that a lookup table over their range beats sorting or searching."""
    return ids.dtype.kind in "iu" and ids.size > 0 and int(ids.max()) - int(ids.min()) < 16 * ids.size + 1024


def _known(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """np.isin for integer ids: a lookup table when the ids are dense (millions of rows in a blink)."""
    if values.dtype.kind in "iu" and dense_ids(known):
        return np.isin(values, known, kind="table")
    return np.isin(values, known)


def _check_links(tables: dict[str, pd.DataFrame], paths: dict[str, Path | None]) -> None:
    """Rows point to known customers and products; no date lies after the data's last date."""
    customers = tables.get("customers")
    if customers is not None:
        known = customers["customer_id"].to_numpy()
        for name in ("products", "transactions", "customer_metrics"):
            if name in tables:
                ids = tables[name]["customer_id"]
                _fail(paths[name], "customer_id", ~_known(ids.to_numpy(), known), ids, "is not in customers")
    products = tables.get("products")
    txns = tables["transactions"]
    if products is not None and "product_id" in txns:
        ids = txns["product_id"]
        present = ids.notna().to_numpy()
        unknown = present.copy()
        unknown[present] = ~_known(ids[present].to_numpy(np.int64), products["product_id"].to_numpy(np.int64))
        _fail(paths["transactions"], "product_id", unknown, ids, "is not in products")
    ledger = tables.get("customer_metrics")
    last_month = None
    if ledger is not None and len(ledger):
        last_month = np.datetime64(str(ledger["month"].max()), "M").astype(np.int64)
    last_txn = txns["transaction_date"].max()
    last_day = dates.data_last_day(None if pd.isna(last_txn) else dates.to_day(last_txn.date()), last_month)
    last = pd.Timestamp(dates.from_day(last_day))
    today = pd.Timestamp(dt.date.today())
    checks = [("transactions", "transaction_date", today)]
    checks += [("customers", "join_date", last), ("products", "start_date", last), ("products", "end_date", last)]
    for name, column, limit in checks:
        frame = tables.get(name)
        if frame is not None and column in frame:
            late = (frame[column] > limit).to_numpy(bool)
            rule = f"is after the data's last date {limit.date()}" if limit is last else "is in the future"
            _fail(paths[name], column, late, frame[column], rule)
