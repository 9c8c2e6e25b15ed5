"""The service in operation: 413, 429, 503 and 500; the first run and a broken model at start; settings from
CLV_* variables; the request log and ids; CORS; and /health answered while a large batch computes."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api import create_app
from clv.model import artifacts
from clv.model.artifacts import LoadedModel
from clv.service import answer, web
from clv.service.settings import Settings
from tests.conftest import ROOT
from tests.servers import uvicorn_thread

PREDICT = "/predict/clv"
BATCH = "/predict/clv/batch"
JSON = {"content-type": "application/json"}


def test_body_over_2mb_is_413_before_parsing(client: TestClient, example: dict) -> None:
    not_json = b"{" + b"x" * (2 * 1024 * 1024 + 1)  # would be a 422 if it were parsed
    response = client.post(PREDICT, content=not_json, headers=JSON)
    assert response.status_code == 413
    assert "2,097,152" in response.json()["detail"]

    large = json.dumps({**example, "transactions": example["transactions"] * 30_000}).encode()
    assert len(large) > 2 * 1024 * 1024
    assert client.post(PREDICT, content=large, headers=JSON).status_code == 413
    assert client.post(BATCH, content=large, headers=JSON).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(30):
            yield b" " * 100_000

    assert client.post(PREDICT, content=chunks(), headers=JSON).status_code == 413


def test_rate_limit_429_with_retry_after(settings: Settings, example: dict) -> None:
    limited = settings.model_copy(update={"rate_limit": "3/minute"})
    with TestClient(create_app(limited)) as client:
        statuses = [client.post(PREDICT, json=example).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        response = client.post(PREDICT, json=example)
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) > 0
        assert "rate limit of 3 per 1 minute" in response.json()["detail"]
        assert client.post(BATCH, json={"customers": [example]}).status_code == 429  # one budget for predictions
        assert client.get("/health").status_code == 200  # monitoring is not limited


def test_503_while_no_model_serves(tmp_path: Path, bank_dir: Path, example: dict) -> None:
    empty = Settings(
        data_dir=bank_dir, model_dir=tmp_path / "models", log_file=tmp_path / "api.log", train_on_start=False
    )
    with TestClient(create_app(empty)) as client:
        health = client.get("/health")
        assert health.status_code == 503
        assert set(health.json()) == {"status", "reason", "request_id"} and health.json()["status"] == "unavailable"
        assert "no model" in health.json()["reason"] and "python model.py train" in health.json()["reason"]
        for response in (client.post(PREDICT, json=example), client.post(BATCH, json={"customers": [example]})):
            assert response.status_code == 503
            assert "no model" in response.json()["detail"]
            assert response.headers["Retry-After"] == "30"
        assert client.get("/model").status_code == 503


def test_a_broken_model_at_start_is_503_and_never_replaced(models: Path, tmp_path: Path, bank_dir: Path) -> None:
    """A model that fails its manifest is reported, not retrained over: whoever broke it must look."""
    version = (models / artifacts.LATEST).resolve()
    (version / artifacts.ARRAYS).write_bytes(b"not a model")
    broken = Settings(data_dir=bank_dir, model_dir=models, log_file=tmp_path / "api.log", train_on_start=True)
    with TestClient(create_app(broken)) as client:
        health = client.get("/health")
        assert health.status_code == 503
        assert "does not verify" in health.json()["reason"]
        assert client.app.state.service.training is None
    assert sorted(p.name for p in models.iterdir()) == sorted([artifacts.LATEST, version.name])


def test_an_unexpected_error_is_500_with_the_request_id_and_no_traceback(
    settings: Settings, tmp_path: Path, example: dict, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(loaded: LoadedModel, customers: list, *args: object) -> list[dict]:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("clv.service.app.predict", broken)
    own = settings.model_copy(update={"log_file": tmp_path / "api.log"})
    with TestClient(create_app(own), raise_server_exceptions=False) as client:
        response = client.post(BATCH, json={"customers": [example]})
    assert response.status_code == 500
    request_id = response.headers["X-Request-ID"]
    assert response.json() == {
        "detail": "internal error; the service's log has it under the request id",
        "request_id": request_id,
    }
    assert "secret" not in response.text
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert f"request {request_id} failed: POST /predict/clv/batch" in caplog.text and "secret internals" in caplog.text


def test_first_run_generates_the_demo_bank_trains_and_serves(
    tmp_path: Path, example: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the default data folder, data/, is the only one the first run may fill
    first = Settings(
        model_dir=tmp_path / "models", log_file=tmp_path / "api.log", first_run_customers=300, rate_limit="1000/minute"
    )
    assert first.demo_data
    with TestClient(create_app(first)) as client:
        health = client.get("/health")
        assert health.status_code == 503
        assert "training" in health.json()["reason"]
        assert client.post(PREDICT, json=example).status_code == 503
        deadline = time.monotonic() + 90
        while health.status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            health = client.get("/health")
        assert health.status_code == 200, health.text
        assert health.json()["synthetic_data"] is True
        assert client.get("/model").json()["synthetic_data"] is True
        assert client.post(PREDICT, json=example).status_code == 200
    assert (tmp_path / "data" / "transactions.csv").is_file()
    assert (tmp_path / "models" / "clv_model_latest").exists()


def test_a_configured_data_folder_without_data_is_503_never_a_made_up_bank(tmp_path: Path) -> None:
    """A mistyped CLV_DATA_DIR must not serve a model of customers who do not exist."""
    typo = Settings(data_dir=tmp_path / "dta", model_dir=tmp_path / "models", log_file=tmp_path / "api.log")
    with TestClient(create_app(typo)) as client:
        health = client.get("/health")
        assert health.status_code == 503
        assert "no data" in health.json()["reason"] and str(tmp_path) not in health.json()["reason"]
        assert "CLV_DATA_DIR" in health.json()["reason"]
        assert client.app.state.service.training is None
    assert not (tmp_path / "dta").exists() and not (tmp_path / "models").exists()


# ---- settings from the environment -------------------------------------------------------------


def test_clv_variables_set_the_service(
    model_dir: Path, bank_dir: Path, tmp_path: Path, example: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_file = tmp_path / "from-env.log"
    for name, value in {
        "CLV_MODEL_DIR": str(model_dir),
        "CLV_DATA_DIR": str(bank_dir),
        "CLV_LOG_FILE": str(log_file),
        "CLV_RATE_LIMIT": "2/minute",
        "CLV_CORS_ORIGINS": "http://bank.test",
        "CLV_MAX_BODY_BYTES": "4096",
    }.items():
        monkeypatch.setenv(name, value)
    with TestClient(create_app()) as client:
        assert client.get("/health").json()["model_version"] == artifacts.load(model_dir).version
        assert [client.post(PREDICT, json=example).status_code for _ in range(3)] == [200, 200, 429]
        cors = client.get("/health", headers={"Origin": "http://bank.test"})
        assert cors.headers["access-control-allow-origin"] == "http://bank.test"
        assert client.post(PREDICT, content=b" " * 5000, headers=JSON).status_code == 413
    assert len(log_file.read_text().splitlines()) == 6


@pytest.mark.parametrize(
    ("name", "value"),
    [("CLV_PORT", "eighty"), ("CLV_PORT", "70000"), ("CLV_RATE_LIMIT", "lots"), ("CLV_TRAIN_ON_START", "maybe")],
)
def test_a_bad_clv_variable_is_one_line_naming_it_and_exit_2(tmp_path: Path, name: str, value: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "CLV_LOG_FILE": str(tmp_path / "api.log"), name: value}
    done = subprocess.run([sys.executable, "api.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"api.py: error: {name}="), done.stderr


# ---- request log, request id, CORS ---------------------------------------------------------------


def test_request_log_has_one_line_per_request_and_no_personal_data(
    client: TestClient, settings: Settings, example: dict
) -> None:
    personal = {**example, "income": 123457.5, "name": "Victor Herrera", "email": "victor.herrera1@example.com"}
    responses = [
        ("POST", PREDICT, client.post(PREDICT, json=personal)),
        ("POST", PREDICT, client.post(PREDICT, json={**personal, "age": 5})),
        ("POST", BATCH, client.post(BATCH, json={"customers": [personal]})),
        ("GET", "/health", client.get("/health", headers={"X-Request-ID": "monitor-check-1"})),
    ]
    lines = logged(settings.log_file, [response.headers["X-Request-ID"] for _, _, response in responses])
    for line, (method, path, response) in zip(lines, responses, strict=True):
        request_id = response.headers["X-Request-ID"]
        pattern = rf"{re.escape(request_id)} {method} {re.escape(path)} {response.status_code} \d+\.\d+ms -$"
        assert re.search(pattern, line), line
    text = "\n".join(lines)
    for secret in ("123457", "Victor", "Herrera", "example.com", "@"):
        assert secret not in text


def logged(path: Path, request_ids: list[str], timeout: float = 5.0) -> list[str]:
    """The log's line of each request id, in their order, once every one has one (each must have exactly one): a
    thread writes them, off the requests' path, a few hundredths of a second after their answers."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        found = [[line for line in lines if f" {request_id} " in line] for request_id in request_ids]
        if all(found) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert all(len(mine) == 1 for mine in found), dict(zip(request_ids, found, strict=True))
    return [mine[0] for mine in found]


def test_request_log_rotates(tmp_path: Path) -> None:
    handler = web.AccessFile(tmp_path / "api.log", maxBytes=4096, backupCount=2)
    logger = logging.getLogger("tests.rotation")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for i in range(500):
            logger.warning("%032x GET /health 200 0.10ms", i)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api.log", "api.log.1", "api.log.2"]
    assert all(p.stat().st_size <= 4096 for p in tmp_path.iterdir())
    assert (tmp_path / "api.log").read_text().splitlines()[-1].startswith(f"{499:032x}")


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    generated = {client.get("/health").headers["X-Request-ID"] for _ in range(2)}
    assert len(generated) == 2
    assert all(re.fullmatch(r"[0-9a-f]{32}", g) for g in generated)
    for unusable in ("x" * 200, "abc GET /model 200 0.1ms", "id\twith\ttabs"):  # too long, or a forged log line
        replaced = client.get("/health", headers={"X-Request-ID": unusable}).headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", replaced), unusable


def test_cors_closed_by_default(client: TestClient) -> None:
    response = client.get("/health", headers={"Origin": "http://example.test"})
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options(
        PREDICT, headers={"Origin": "http://example.test", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_open_to_the_configured_origin(settings: Settings) -> None:
    opened = settings.model_copy(update={"cors_origins": "http://example.test"})
    with TestClient(create_app(opened)) as client:
        response = client.get("/health", headers={"Origin": "http://example.test"})
        assert response.headers["access-control-allow-origin"] == "http://example.test"
        assert "x-request-id" in response.headers["access-control-expose-headers"].lower()
        preflight = client.options(
            PREDICT, headers={"Origin": "http://example.test", "Access-Control-Request-Method": "POST"}
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://example.test"
        other = client.get("/health", headers={"Origin": "http://elsewhere.test"})
        assert "access-control-allow-origin" not in other.headers


# ---- the event loop stays free ---------------------------------------------------------------------


def test_health_answers_while_a_batch_is_being_scored(
    settings: Settings, example: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch is scored off the event loop: held inside its scoring call, it does not stop /health from
    answering. Scored on the loop instead, /health would wait for the batch and the test would time out."""
    scoring, release = threading.Event(), threading.Event()
    real = answer.predict

    def held(loaded: LoadedModel, customers: list, *args: object) -> list[dict]:
        scoring.set()
        assert release.wait(30), "the test never released the batch"
        return real(loaded, customers, *args)

    monkeypatch.setattr("clv.service.app.predict", held)
    with (
        uvicorn_thread(create_app(settings)) as url,
        httpx.Client(base_url=url, timeout=10) as http,
        ThreadPoolExecutor(1) as pool,
    ):
        batch = pool.submit(http.post, BATCH, json={"customers": [example] * 3})
        try:
            assert scoring.wait(30)
            answers = [http.get("/health").status_code for _ in range(3)]
            assert not batch.done()  # /health answered while the batch was held in its scoring call
        finally:
            release.set()
        response = batch.result()
    assert answers == [200, 200, 200]
    assert response.status_code == 200 and len(response.json()["predictions"]) == 3
