"""Where a bank lives, or where scores go: a folder, or a PostgreSQL URL whose password is never shown.

`postgresql://USER[:PASSWORD]@HOST[:PORT]/DB?schema=NAME` (or `?table=SCHEMA.NAME` for scores); any other query
parameter (sslmode, connect_timeout, ...) goes to libpq unchanged, and a URL without a password lets libpq find it
in PGPASSWORD or ~/.pgpass. Text that looks like a URL of another scheme is refused, never taken for a folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

SCHEMES = ("postgresql", "postgres")
URL_LIKE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):(//|[^\\/]*@)")  # scheme://... or user@... after a scheme
PASSWORD_IN_URL = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*:)([^@\s/]*)@")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
CONNECT_TIMEOUT = 10  # seconds libpq waits for a server that does not answer: an error well within 30 s
PART_CUSTOMERS = "part_customers"  # ours too: the customers of a part (default clv.data.warehouse's)


class LocationError(ValueError):
    """A --data-dir, --output or --out that is neither a folder nor a URL we read; the message shows no password."""


def mask(text: str) -> str:
    """Any URL's password in `text` as ***: for messages that quote what a driver or a user said."""
    return PASSWORD_IN_URL.sub(r"\1***@", text)


@dataclass(frozen=True)
class WarehouseURL:
    """A PostgreSQL database and a schema (or a table) in it. str() and repr() mask the password, so the URL can go
    into any message, log line or model card; `libpq` is the one spelling with the password, for the driver."""

    user: str | None
    host: str
    port: int | None
    database: str
    schema: str = "public"
    table: str | None = None
    password: str | None = field(default=None, repr=False)
    parameters: tuple[tuple[str, str], ...] = ()  # libpq's, passed through
    part_customers: int | None = None

    @classmethod
    def parse(cls, text: str) -> WarehouseURL:
        parts = urlsplit(text)
        shown = mask(text)
        if parts.scheme not in SCHEMES:
            raise LocationError(f"{shown}: only postgresql:// URLs are read (or a folder)")
        try:
            port = parts.port
        except ValueError:
            raise LocationError(f"{shown}: the port is not a number") from None
        database = unquote(parts.path.lstrip("/"))
        if not parts.hostname or not database:
            raise LocationError(f"{shown}: a URL names a host and a database: postgresql://USER@HOST[:PORT]/DB")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        schema, table = query.pop("schema", "public"), query.pop("table", None)
        part_customers = query.pop(PART_CUSTOMERS, None)
        if part_customers is not None and not (part_customers.isdigit() and int(part_customers) > 0):
            raise LocationError(f"{shown}: {PART_CUSTOMERS} must be a whole number of 1 or more")
        if table is not None and "." in table:
            schema, table = table.split(".", 1)
        for name in (schema, table):
            if name is not None and not NAME.fullmatch(name):
                raise LocationError(f"{shown}: '{name}' is not a plain SQL name (letters, digits, _)")
        return cls(
            user=unquote(parts.username) if parts.username else None,
            host=parts.hostname,
            port=port,
            database=database,
            schema=schema,
            table=table,
            part_customers=None if part_customers is None else int(part_customers),
            password=unquote(parts.password) if parts.password is not None else None,
            parameters=tuple(sorted(query.items())),
        )

    def _text(self, password: str | None, ours: bool) -> str:
        user = quote(self.user or "", safe="")
        secret = "" if password is None else f":{quote(password, safe='') if password != '***' else password}"
        who = f"{user}{secret}@" if self.user or password is not None else ""
        port = f":{self.port}" if self.port else ""
        query = dict(self.parameters)
        if ours:
            query = {"schema": self.schema} | query if self.schema != "public" and not self.table else query
            query = query | ({PART_CUSTOMERS: str(self.part_customers)} if self.part_customers else {})
            query = {"table": f"{self.schema}.{self.table}"} | query if self.table else query
        else:
            query.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
        tail = f"?{urlencode(query)}" if query else ""
        return f"postgresql://{who}{self.host}{port}/{quote(self.database, safe='')}{tail}"

    @property
    def libpq(self) -> str:
        """The URI the driver connects with: the password, libpq's parameters, a connect timeout; not ours."""
        return self._text(self.password, ours=False)

    @property
    def where(self) -> str:
        """host:port, for an error that says which server did not answer."""
        return f"{self.host}:{self.port or 5432}"

    def qualified(self, name: str) -> str:
        """A table of this URL's schema, quoted for SQL."""
        return f'"{self.schema}"."{name}"'

    def __str__(self) -> str:
        return self._text(None if self.password is None else "***", ours=True)

    def __repr__(self) -> str:
        return f"WarehouseURL({self})"


Location = Path | WarehouseURL


def looks_like_url(text: str) -> bool:
    return bool(URL_LIKE.match(text)) and not re.match(r"^[A-Za-z]:[\\/]", text)  # C:\ is a Windows folder


def parse_location(text: str | Path | WarehouseURL) -> Location:
    """A folder, or a PostgreSQL URL; a URL of any other scheme is refused (LocationError)."""
    if isinstance(text, WarehouseURL):
        return text
    if isinstance(text, Path):  # a URL taken for a path lost one of its slashes: postgresql:/user@host/db
        text = re.sub(r"^([A-Za-z][A-Za-z0-9+.\-]*):/(?!/)", r"\1://", str(text))
    return WarehouseURL.parse(text) if looks_like_url(text) else Path(text)
