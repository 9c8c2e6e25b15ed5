"""The synthetic bank into PostgreSQL, for demos and tests: the four tables created in a schema in warehouse
types (BIGINT ids, INTEGER ages and scores, NUMERIC(18,2) money, DATE dates, TEXT categories, the ledger's month
as the DATE of its first day), loaded in bulk by ADBC's COPY, indexed by customer for the readers' ranges."""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from clv.data.location import WarehouseURL
from clv.data.postgres import connect, failing_as_one_line
from clv.data.schema import TABLES, Column
from clv.synthetic.generator import Plan, part_seed, simulate

logger = logging.getLogger(__name__)

WHOLE = ("age", "credit_score", "tenure_months")  # INTEGER; other ids BIGINT
MONEY = pa.decimal128(18, 2)


def sql_type(column: Column) -> str:
    if column.kind == "int":
        return "BIGINT"
    if column.kind == "float":
        return "INTEGER" if column.name in WHOLE else "NUMERIC(18,2)"
    if column.kind in ("date", "month"):
        return "DATE"
    return "TEXT"


def _ddl(url: WarehouseURL, name: str) -> str:
    columns = ", ".join(
        f'"{c.name}" {sql_type(c)}{" NOT NULL" if c.required and not c.nullable else ""}' for c in TABLES[name]
    )
    return f"CREATE TABLE {url.qualified(name)} ({columns})"


def warehouse_types(name: str, table: pa.Table) -> pa.Table:
    """A generated table in the columns' warehouse types: money as exact decimals of the cents the generator
    rounded to, months as their first day, categories as text."""
    kinds = {c.name: c for c in TABLES[name]}
    columns = []
    for column_name, values in zip(table.column_names, table.columns, strict=True):
        column = kinds[column_name]
        target = sql_type(column)
        if pa.types.is_dictionary(values.type):
            if column.kind == "month":  # 'YYYY-MM' labels: each label's first day, then every row's
                values = values.combine_chunks()
                days = pc.cast(pc.binary_join_element_wise(values.dictionary, "-01", ""), pa.date32())
                values = pc.take(days, values.indices)
            else:
                values = pc.cast(values, pa.string())
        elif target == "INTEGER":
            values = pc.cast(values, pa.int32())
        elif target.startswith("NUMERIC"):
            values = pc.cast(values, MONEY)  # refused (ArrowInvalid) if any value had more than cents
        columns.append(values)
    return pa.table(columns, names=table.column_names)


def create_tables(cursor: Any, url: WarehouseURL) -> None:
    """The schema's four tables, made anew (in the caller's transaction)."""
    cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{url.schema}"')
    for name in TABLES:
        cursor.execute(f"DROP TABLE IF EXISTS {url.qualified(name)}")
        cursor.execute(_ddl(url, name))


def append(cursor: Any, url: WarehouseURL, tables: dict[str, pa.Table]) -> None:
    for name in TABLES:
        if name in tables:
            cursor.adbc_ingest(name, warehouse_types(name, tables[name]), mode="append", db_schema_name=url.schema)


def index_tables(cursor: Any, url: WarehouseURL) -> None:
    """An index by customer for each part's range, the rows stored in its order (the parts were loaded side by side,
    so a range's rows would otherwise be spread over the whole table), then fresh statistics for the planner."""
    for name in TABLES:
        table = url.qualified(name)
        cursor.execute(f'CREATE INDEX "{name}_by_customer" ON {table} (customer_id)')
        cursor.execute(f'CLUSTER {table} USING "{name}_by_customer"')
        cursor.execute(f"ANALYZE {table}")


def write_bank(url: WarehouseURL, tables: dict[str, pa.Table]) -> None:
    """A whole generated bank into the URL's schema, in one transaction: the tables are there whole or as before."""
    connection = connect(url, autocommit=False)
    try:
        cursor = connection.cursor()
        with failing_as_one_line(url, f"cannot write the bank into schema {url.schema}"):
            create_tables(cursor, url)
            append(cursor, url, tables)
            index_tables(cursor, url)
            connection.commit()
    finally:
        connection.close()
    logger.info("wrote %s to %s", ", ".join(f"{n} {t.num_rows:,}" for n, t in tables.items() if n in TABLES), url)


def prepare_bank(url: WarehouseURL) -> None:
    """Empty tables for a bank loaded part by part (append_part on the workers, then finish_bank)."""
    connection = connect(url, autocommit=False)
    try:
        with failing_as_one_line(url, f"cannot create the bank's tables in schema {url.schema}"):
            create_tables(connection.cursor(), url)
            connection.commit()
    finally:
        connection.close()


def append_part(url: WarehouseURL, tables: dict[str, pa.Table]) -> None:
    """One part's rows, appended in one transaction over the worker's own connection."""
    connection = connect(url, autocommit=False)
    try:
        with failing_as_one_line(url, "cannot load a part of the bank"):
            append(connection.cursor(), url, tables)
            connection.commit()
    finally:
        connection.close()


def finish_bank(url: WarehouseURL) -> None:
    connection = connect(url, autocommit=True)
    try:
        with failing_as_one_line(url, "cannot index the bank's tables"):
            index_tables(connection.cursor(), url)
    finally:
        connection.close()


def load_part(plan: Plan, part: str, url: WarehouseURL) -> dict[str, int]:
    """Simulate one partition of a planned bank (as clv.synthetic.generator's files) and append its rows."""
    tables = simulate(plan.config, part_seed(plan, part))
    append_part(url, tables)
    return {name: tables[name].num_rows for name in TABLES}


def generate_into(plan: Plan, url: WarehouseURL, runner: Any) -> dict[str, int]:
    """A partitioned synthetic bank into the URL's schema: tables made, parts loaded in parallel, then indexed."""
    prepare_bank(url)
    done = runner.map(load_part, plan, label="loaded", url=url)
    finish_bank(url)
    return {name: sum(part[name] for part in done) for name in TABLES}
