"""Connections to PostgreSQL through ADBC (libpq, COPY in Arrow): one-line errors without secrets, and the one
snapshot every connection of a command reads (exported by the coordinator, imported by each reader)."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from clv.data.contract import DataContractError
from clv.data.location import WarehouseURL, mask

logger = logging.getLogger(__name__)

SNAPSHOT = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")


class WarehouseError(DataContractError):
    """The database cannot be reached, or lacks a table or column: one line, exit code 2, no password."""


def _reason(exc: BaseException) -> str:
    """The driver's first line without its codes (IO:, [libpq], ...) and without any password."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    text = re.sub(r"^[A-Z_]+: (\[libpq\] )?", "", text)
    text = re.sub(r"^(Failed to (connect|prepare query|execute query): )", "", text)
    return mask(text.replace("ERROR:  ", "").strip())


def connect(url: WarehouseURL, autocommit: bool = True) -> Any:
    """An ADBC connection, or a WarehouseError naming the server (host and port) and why."""
    import adbc_driver_manager
    import adbc_driver_postgresql.dbapi as pg

    try:
        return pg.connect(url.libpq, autocommit=autocommit)
    except adbc_driver_manager.Error as exc:
        raise WarehouseError(f"{url}: cannot connect to PostgreSQL at {url.where}: {_reason(exc)}") from None


@contextlib.contextmanager
def failing_as_one_line(url: WarehouseURL, what: str) -> Iterator[None]:
    """A driver's error while doing `what` as a WarehouseError naming it."""
    import adbc_driver_manager

    try:
        yield
    except adbc_driver_manager.Error as exc:
        raise WarehouseError(f"{url}: {what}: {_reason(exc)}") from None


def execute(cursor: Any, sql: str) -> None:
    cursor.execute(sql)


def rows(cursor: Any, sql: str) -> list[tuple]:
    cursor.execute(sql)
    return [tuple(row) for row in cursor.fetchall()]


def arrow(cursor: Any, sql: str) -> pa.Table:
    cursor.execute(sql)
    return cursor.fetch_arrow_table()


class Snapshot:
    """A REPEATABLE READ, READ ONLY transaction held open on the coordinator's connection for the command's life;
    its exported snapshot id lets every reader (each part, on any worker) see exactly the same rows, whatever ETL
    commits meanwhile. Not pickled: tasks get the id, not the connection."""

    def __init__(self, url: WarehouseURL) -> None:
        self.url = url
        self.connection = connect(url)
        self.cursor = self.connection.cursor()
        with failing_as_one_line(url, "cannot start a snapshot"):
            execute(self.cursor, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            self.id = rows(self.cursor, "SELECT pg_export_snapshot()")[0][0]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cursor.close()
            self.connection.close()


@contextlib.contextmanager
def reading(url: WarehouseURL, snapshot: str | None) -> Iterator[Any]:
    """A cursor in a read-only repeatable-read transaction on its own connection, in `snapshot` when given."""
    if snapshot is not None and not SNAPSHOT.fullmatch(snapshot):
        raise WarehouseError(f"{url}: '{snapshot}' is not a snapshot id")
    connection = connect(url)
    try:
        cursor = connection.cursor()
        with failing_as_one_line(url, "cannot read in the command's snapshot (its coordinator has ended?)"):
            execute(cursor, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            if snapshot is not None:
                execute(cursor, f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        yield cursor
        with contextlib.suppress(Exception):
            execute(cursor, "COMMIT")
    finally:
        connection.close()


def table_columns(cursor: Any, url: WarehouseURL, tables: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """The columns (name: data type) of each of `tables` that exists in the URL's schema."""
    names = ", ".join(f"'{name}'" for name in tables)
    found: dict[str, dict[str, str]] = {}
    with failing_as_one_line(url, "cannot list the schema's tables"):
        listed = rows(
            cursor,
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = '{url.schema}' AND table_name IN ({names}) ORDER BY ordinal_position",
        )
    for table, column, kind in listed:
        found.setdefault(table, {})[column] = kind
    return found
