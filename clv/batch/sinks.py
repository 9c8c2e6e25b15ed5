"""Scores into PostgreSQL: a scoring's rows (the Parquet parts clv.batch.scoring wrote) go by ADBC's COPY into a
temporary staging table, then replace the target's rows in ONE transaction, so a reader sees the old scores whole
or the new ones whole, and a scoring killed halfway leaves the old table as it was (its staging table dies with
its session). The run's portfolio may go to a second table, in the same transaction."""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from clv.data.location import NAME, LocationError, WarehouseURL
from clv.data.postgres import connect, failing_as_one_line, rows

logger = logging.getLogger(__name__)

RUN_COLUMNS = ("as_of", "model_version", "run_id")
PORTFOLIO_DDL = (
    "(run_id TEXT PRIMARY KEY, as_of DATE NOT NULL, model_version TEXT NOT NULL, customers BIGINT NOT NULL, "
    "total_value NUMERIC, value_at_risk NUMERIC, written_at TIMESTAMPTZ NOT NULL DEFAULT now(), "
    "portfolio JSONB NOT NULL)"
)


@dataclass(frozen=True)
class RunStamp:
    """What every row of a scoring carries beside the file's columns."""

    as_of: dt.date
    model_version: str
    run_id: str


def score_table(url: WarehouseURL) -> WarehouseURL:
    """--output's URL, which must name its table (?table=SCHEMA.NAME)."""
    if url.table is None:
        raise LocationError(f"{url}: name the scores' table: ?table=SCHEMA.NAME")
    return url


def portfolio_url(url: WarehouseURL, name: str) -> WarehouseURL:
    """--portfolio-table SCHEMA.NAME (or NAME, in --output's schema): a table of --output's database."""
    schema, _, table = name.rpartition(".")
    schema = schema or url.schema
    if not (NAME.fullmatch(schema) and NAME.fullmatch(table)):
        raise LocationError(f"'{name}' is not a table name (SCHEMA.NAME, letters, digits and _)")
    return WarehouseURL(url.user, url.host, url.port, url.database, schema, table, url.password, url.parameters)


def _batches(dataset: Path, stamp: RunStamp) -> pa.RecordBatchReader:
    """The scoring's rows, part after part, with the run's columns added."""
    scores = ds.dataset(dataset, format="parquet")
    schema = scores.schema.append(pa.field("as_of", pa.date32()))
    schema = schema.append(pa.field("model_version", pa.string())).append(pa.field("run_id", pa.string()))

    def stamped() -> Any:
        for batch in scores.to_batches():
            n = batch.num_rows
            extra = [
                pa.array([stamp.as_of] * n, pa.date32()),
                pa.array([stamp.model_version] * n, pa.string()),
                pa.array([stamp.run_id] * n, pa.string()),
            ]
            yield pa.RecordBatch.from_arrays([*batch.columns, *extra], schema=schema)

    return pa.RecordBatchReader.from_batches(schema, stamped())


def _sql_type(field: pa.Field) -> str:
    """The warehouse type of a score column: exact NUMERIC for values (what was rounded stays so), BIGINT ids."""
    if pa.types.is_floating(field.type):
        return "NUMERIC"
    if pa.types.is_integer(field.type):
        return "BIGINT"
    if pa.types.is_date(field.type):
        return "DATE"
    return "TEXT"


def _columns_of(cursor: Any, url: WarehouseURL) -> list[tuple[str, str]]:
    return rows(
        cursor,
        "SELECT column_name, data_type FROM information_schema.columns "
        f"WHERE table_schema = '{url.schema}' AND table_name = '{url.table}' ORDER BY ordinal_position",
    )


def write_scores_table(
    url: WarehouseURL,
    dataset: Path,
    stamp: RunStamp,
    portfolio: dict | None = None,
    portfolio_to: WarehouseURL | None = None,
) -> int:
    """The scores in `dataset` as the rows of `url`'s table (created when missing, its rows replaced else), and the
    portfolio as the run's row of `portfolio_to`; one transaction. Returns the rows written."""
    reader = _batches(dataset, stamp)
    target = url.qualified(url.table)
    wanted = [(f.name, _sql_type(f)) for f in reader.schema]
    stage = f"clv_scores_{secrets.token_hex(6)}"
    connection = connect(url, autocommit=False)
    try:
        cursor = connection.cursor()
        with failing_as_one_line(url, f"cannot write the scores to {url.schema}.{url.table}"):
            written = cursor.adbc_ingest(stage, reader, mode="create", temporary=True)
            cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{url.schema}"')
            have = [(name, kind.upper()) for name, kind in _columns_of(cursor, url)]
            if have != wanted:  # a new table, or scores of another shape (a model of other horizons): made anew
                if have:
                    logger.info("%s: its columns change; the table is made anew", url)
                cursor.execute(f"DROP TABLE IF EXISTS {target}")
                ddl = ", ".join(f'"{name}" {kind}' for name, kind in wanted)
                cursor.execute(f"CREATE TABLE {target} ({ddl}, PRIMARY KEY (customer_id))")
            else:  # rows replaced, the table kept: a reader of the old rows is never blocked nor sees half
                cursor.execute(f"DELETE FROM {target}")
            names = ", ".join(f'"{name}"' for name, _ in wanted)
            cursor.execute(f"INSERT INTO {target} ({names}) SELECT {names} FROM {stage}")
            cursor.execute(f"DROP TABLE {stage}")
            if portfolio is not None and portfolio_to is not None:
                _write_portfolio(cursor, portfolio_to, stamp, portfolio)
        with failing_as_one_line(url, "cannot commit the scores"):
            connection.commit()
    finally:
        connection.close()
    logger.info("wrote %d scores to %s", written, url)
    return written


def _write_portfolio(cursor: Any, url: WarehouseURL, stamp: RunStamp, portfolio: dict) -> None:
    """The run's row of the portfolio table: its headline figures, and the whole portfolio as JSON."""
    table = url.qualified(url.table)
    cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{url.schema}"')
    cursor.execute(f"CREATE TABLE IF NOT EXISTS {table} {PORTFOLIO_DDL}")
    cursor.execute(f"DELETE FROM {table} WHERE run_id = '{stamp.run_id}'")
    headline = portfolio["horizons"][0]["total"] if portfolio.get("horizons") else None
    row = pa.table(
        {
            "run_id": [stamp.run_id],
            "as_of": pa.array([stamp.as_of], pa.date32()),
            "model_version": [stamp.model_version],
            "customers": pa.array([portfolio.get("customers", 0)], pa.int64()),
            "total_value": pa.array([headline], pa.float64()),
            "value_at_risk": pa.array([portfolio.get("value_at_risk")], pa.float64()),
            "portfolio": [json.dumps(portfolio, default=str)],
        }
    )
    stage = f"clv_portfolio_{secrets.token_hex(6)}"
    cursor.adbc_ingest(stage, row, mode="create", temporary=True)
    cursor.execute(
        f"INSERT INTO {table} (run_id, as_of, model_version, customers, total_value, value_at_risk, portfolio) "
        f"SELECT run_id, as_of, model_version, customers, total_value, value_at_risk, portfolio::jsonb FROM {stage}"
    )
    cursor.execute(f"DROP TABLE {stage}")
