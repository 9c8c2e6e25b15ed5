"""A real PostgreSQL server for the tests: Debian's binaries, initdb into a temporary folder, a non-root user
(PostgreSQL refuses root: the `postgres` system user when the tests run as root, else the current user), a free
loopback port and password authentication (scram-sha-256) with a generated password; stopped afterwards."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd

from tests.servers import free_port, run_script

USER = "analyst"
DATABASE = "bank"
SCHEMA = "bank"  # conftest's pg_bank: the small bank, loaded by data_gen.py


def binaries() -> Path:
    """The newest PostgreSQL's bin folder of Debian's packages (they are not on PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if not found:
        raise RuntimeError("PostgreSQL is missing: run `make system` (apt-get install postgresql)")
    return Path(found[-1]).parent


class PostgresServer:
    """initdb, pg_ctl start, a role and a database; `url` is the bank's URL, password included."""

    def __init__(self) -> None:
        self.bin = binaries()
        self.root = os.geteuid() == 0
        self.folder = Path(tempfile.mkdtemp(prefix="clv-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.password = secrets.token_urlsafe(18)
        secret = self.folder / "password"
        secret.write_text(f"{self.password}\n")
        secret.chmod(0o600)
        if self.root:  # the server's files belong to the user it runs as
            shutil.chown(self.folder, "postgres", "postgres")
            shutil.chown(secret, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            "--pwfile",
            str(secret),
            "-A",
            "scram-sha-256",
            "--encoding",
            "UTF8",
            "--no-sync",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.folder}'",
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "off",
            "shared_buffers": "128MB",
            "max_connections": "50",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-t", "60", "start")
        self.execute(f"CREATE DATABASE {DATABASE}", database="postgres")

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.folder)

    def url(self, database: str = DATABASE, password: bool = True, **query: str) -> str:
        secret = f":{self.password}" if password else ""
        tail = "&".join(f"{key}={value}" for key, value in query.items())
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{database}" + (f"?{tail}" if tail else "")

    def execute(self, sql: str, database: str = DATABASE) -> list[tuple]:
        """Statements separated by '; ', in autocommit; the rows of the last one."""
        import adbc_driver_postgresql.dbapi as pg

        found: list[tuple] = []
        with pg.connect(self.url(database), autocommit=True) as conn, conn.cursor() as cursor:
            for statement in sql.split("; "):
                cursor.execute(statement)
                found = [tuple(row) for row in cursor.fetchall()] if cursor.description else []
        return found

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            time.sleep(0.1)
            shutil.rmtree(self.folder, ignore_errors=True)


def copy_schema(pg: PostgresServer, name: str) -> str:
    """The bank copied into schema `name` (for a test to spoil); its URL."""
    statements = [f"DROP SCHEMA IF EXISTS {name} CASCADE", f"CREATE SCHEMA {name}"]
    statements += [
        f"CREATE TABLE {name}.{t} AS SELECT * FROM {SCHEMA}.{t}"
        for t in ("customers", "products", "transactions", "customer_metrics")
    ]
    pg.execute("; ".join(statements))
    return pg.url(schema=name)


def score(data: str | Path, model_dir: Path, output: str | Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_script(
        "model.py",
        "score",
        "--data-dir",
        data,
        "--model-dir",
        model_dir,
        "--output",
        output,
        "--workers",
        "1",
        "--quiet",
        *extra,
    )


def one_line(stderr: str) -> str:
    """The command's one error line (a local cluster may warn before it that the dashboard's port is taken)."""
    errors = [line for line in stderr.splitlines() if line.startswith("model.py ")]
    assert len(errors) == 1 and stderr.strip().endswith(errors[0]), stderr
    return errors[0]


def scores_in(pg: PostgresServer, table: str) -> pd.DataFrame:
    rows = pg.execute(f"SELECT customer_id, predicted_clv::text, as_of::text, model_version, run_id FROM {table}")
    return pd.DataFrame(rows, columns=["customer_id", "predicted_clv", "as_of", "model_version", "run_id"])
