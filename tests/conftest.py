"""Shared fixtures: a small generated bank, a model trained on it, and the API around that model."""

from __future__ import annotations

import copy
import datetime as dt
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fastapi.testclient import TestClient

from api import create_app
from clv.model import artifacts
from clv.model.training import train_and_save
from clv.service.schemas.requests import EXAMPLE
from clv.service.settings import Settings
from clv.synthetic import generator

if TYPE_CHECKING:  # tests/postgres.py imports tests/servers.py, which imports this module
    from tests.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[1]

SMALL_BANK = generator.Config(customers=1200, start=dt.date(2021, 1, 1), end=dt.date(2024, 12, 31), seed=5, oracle=True)


# TestClient sends Host: testserver, and uvicorn_thread's clients 127.0.0.1: allowed here by name, the default
# (the loopback names only) kept; no keys file, so that a developer's api_keys.json never turns keys on in a test
TEST_HOSTS = "testserver,127.0.0.1,localhost"


@pytest.fixture(autouse=True)
def _test_settings(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("CLV_ALLOWED_HOSTS", TEST_HOSTS)
    monkeypatch.setenv("CLV_API_KEYS_FILE", str(tmp_path_factory.getbasetemp() / "no_api_keys.json"))


@pytest.fixture
def example() -> dict:
    return copy.deepcopy(EXAMPLE)


def shared(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], object]) -> Path:
    """The folder `name`, made by `make` once for the whole run: under pytest-xdist the first worker to ask makes
    it in the run's folder, which every worker's folder lies in, and the others wait for it and read it. Deterministic
    things only (a fixed seed), and read-only: each worker would otherwise have made the same one itself."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    out, done = root / name, root / f"{name}.done"
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even if this worker dies
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)  # a half-made one of a worker that died
            out.mkdir()
            make(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def bank_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated bank (1,200 customers, 2021-2024, with the oracle)."""
    return shared(
        tmp_path_factory,
        "bank",
        lambda out: generator.write_tables(generator.simulate(SMALL_BANK), out, config=SMALL_BANK),
    )


@pytest.fixture(scope="session")
def model_dir(bank_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on the small bank; treat it as read-only (copy it to change it)."""
    return shared(tmp_path_factory, "models", lambda out: train_and_save(bank_dir, out))


@pytest.fixture(scope="session")
def six_month_model(bank_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model of the small bank for a horizon of 6 months at 5% a year."""
    return shared(
        tmp_path_factory, "six_months", lambda out: train_and_save(bank_dir, out, horizon_months=6, discount_rate=0.05)
    )


@pytest.fixture(scope="session")
def loaded(model_dir: Path) -> artifacts.LoadedModel:
    return artifacts.load(model_dir)


@pytest.fixture(scope="session")
def settings(bank_dir: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The service's settings for the small model: its own log file, a rate limit no test reaches."""
    log_file = tmp_path_factory.mktemp("log") / "api.log"
    return Settings(
        data_dir=bank_dir,
        model_dir=model_dir,
        log_file=log_file,
        rate_limit="100000/minute",
        allowed_hosts=TEST_HOSTS,
        api_keys_file=log_file.with_name("no_api_keys.json"),
    )


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    """One app and client for a test module (the app's lifespan runs once): for tests that only send
    requests. A test that needs other settings or its own state makes its own app."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def models(model_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the session's model folder."""
    out = tmp_path / "models"
    shutil.copytree(model_dir, out, symlinks=True)
    return out


def resave(loaded: artifacts.LoadedModel, model_dir: Path) -> Path:
    """Save the loaded model again as a new version."""
    importance = artifacts.read_importance(loaded.path)
    return artifacts.save(loaded.model, loaded.metadata.model_dump(), importance, loaded.profile, model_dir)


# ---- a bank in a real PostgreSQL server (tests/postgres.py), for the warehouse's tests --------------------


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresServer]:
    from tests.postgres import PostgresServer

    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()


def bank_flags() -> list[str]:
    """data_gen.py's options of conftest's SMALL_BANK (bank_dir): the same bank, into the database."""
    config = SMALL_BANK
    options = {"customers": config.customers, "start-date": config.start, "end-date": config.end, "seed": config.seed}
    return [text for name, value in options.items() for text in (f"--{name}", str(value))]


@pytest.fixture(scope="session")
def pg_bank(pg: PostgresServer) -> str:
    """conftest's small bank, written by `data_gen.py --out postgresql://...?schema=bank`; its URL."""
    from tests.postgres import SCHEMA
    from tests.servers import run_script

    url = pg.url(schema=SCHEMA)
    done = run_script("data_gen.py", "--out", url, "--quiet", *bank_flags())
    assert done.returncode == 0, done.stderr
    return url
