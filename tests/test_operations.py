"""The service in operation: model versions rolled out and back without a restart (by the periodic look and by
SIGHUP), a tampered version refused, a request in flight finishing on its model, /metrics, /livez and /readyz,
two workers' metrics summed, and a rate limit shared through Redis."""

from __future__ import annotations

import json
import math
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from api import create_app
from clv.model import artifacts
from clv.model.artifacts import LoadedModel
from clv.model.features import LEDGER_FEATURES
from clv.model.monitoring import SIGNIFICANT
from clv.service import answer, telemetry
from clv.service.settings import Settings
from tests.conftest import resave
from tests.servers import ApiProcess, redis_server, uvicorn_thread, wait_until

PREDICT = "/predict/clv"
BATCH = "/predict/clv/batch"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def following(settings: Settings, models: Path, tmp_path: Path) -> Settings:
    """The service on the writable model folder, looking for a new latest every 0.2 s."""
    return settings.model_copy(update={"model_dir": models, "reload_seconds": 0.2, "log_file": tmp_path / "api.log"})


def samples(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a series not (yet) exported, as Prometheus' increase() reads it."""
    return scraped.get((name, frozenset(labels.items())), 0.0)


def increase(name: str, old: Samples, new: Samples, **labels: str) -> float:
    return value(new, name, **labels) - value(old, name, **labels)


def labelled(scraped: Samples, name: str, label: str) -> dict[str, float]:
    """The samples of `name` by the value of one of their labels."""
    return {dict(labels)[label]: v for (n, labels), v in scraped.items() if n == name}


def serving_version(client: TestClient | httpx.Client) -> str:
    return client.get("/health").json()["model_version"]


def flip_a_byte(path: Path) -> None:
    """Change one byte in the middle of a file, keeping its size."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# ---- models roll out and back without a restart ------------------------------------------------------


def test_a_new_version_rolls_out_and_back_without_a_restart(following: Settings, models: Path, example: dict) -> None:
    old = artifacts.load(models)
    with TestClient(create_app(following)) as client:
        assert serving_version(client) == old.version
        before = samples(client.get("/metrics").text)

        new = resave(old, models).name.removeprefix(artifacts.PREFIX)
        wait_until(lambda: serving_version(client) == new, f"/health showing the new version {new}")
        assert client.post(PREDICT, json=example).json()["model_version"] == new
        rolled_out = labelled(samples(client.get("/metrics").text), "clv_model_info", "version")
        assert (rolled_out[new], rolled_out[old.version]) == (1, 0)

        artifacts.promote(models, old.version)  # the rollback
        wait_until(lambda: serving_version(client) == old.version, f"/health showing {old.version} again")
        assert client.post(PREDICT, json=example).json()["model_version"] == old.version
        after = samples(client.get("/metrics").text)

    rolled_back = labelled(after, "clv_model_info", "version")
    assert (rolled_back[old.version], rolled_back[new]) == (1, 0)
    assert increase("clv_model_reloads_total", before, after, result="succeeded") == 2


def test_a_tampered_version_is_refused_once_and_the_old_one_keeps_serving(
    following: Settings, models: Path, example: dict, caplog: pytest.LogCaptureFixture
) -> None:
    old = artifacts.load(models)
    tampered = models / f"{artifacts.PREFIX}29991231T000000000000Z"
    shutil.copytree(old.path, tampered)
    flip_a_byte(tampered / artifacts.ARRAYS)

    def refusals(client: TestClient) -> float:
        return value(samples(client.get("/metrics").text), "clv_model_reloads_total", result="refused")

    with TestClient(create_app(following)) as client:
        before = refusals(client)
        artifacts.point_latest(models, tampered.name)
        wait_until(lambda: refusals(client) > before, "a refusal counted in /metrics")
        time.sleep(1.0)  # five more looks at the same tampered latest
        assert refusals(client) - before == 1
        assert serving_version(client) == old.version
        response = client.post(PREDICT, json=example)
        assert response.status_code == 200 and response.json()["model_version"] == old.version
    assert f"refused model {tampered.name}, still serving {old.version}" in caplog.text
    assert "SHA-256 differs" in caplog.text


def test_a_request_in_flight_finishes_on_the_model_it_started_with(
    following: Settings, models: Path, example: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch held inside its scoring call while another version is swapped in answers with the version it
    started on; the requests after the swap are scored by the new one."""
    scoring, release = threading.Event(), threading.Event()
    real = answer.score

    def held(loaded: LoadedModel, customers: list, *args: object) -> list[dict]:
        if len(customers) == 3:  # only the batch under test: single requests are scored on the event loop
            scoring.set()
            assert release.wait(30), "the test never released the batch"
        return real(loaded, customers, *args)

    monkeypatch.setattr(answer, "score", held)
    old = artifacts.load(models)
    with (
        uvicorn_thread(create_app(following)) as url,
        httpx.Client(base_url=url, timeout=30) as http,
        ThreadPoolExecutor(1) as pool,
    ):
        try:
            in_flight = pool.submit(http.post, BATCH, json={"customers": [example] * 3})
            assert scoring.wait(30), "the batch never reached its scoring call"
            new = resave(old, models).name.removeprefix(artifacts.PREFIX)
            with httpx.Client(base_url=url, timeout=30) as other:
                wait_until(lambda: serving_version(other) == new, f"/health showing the new version {new}")
                assert not in_flight.done()
                next_one = other.post(PREDICT, json=example)
        finally:
            release.set()
        response = in_flight.result(timeout=30)
    assert response.status_code == 200
    assert [p["model_version"] for p in response.json()["predictions"]] == [old.version] * 3
    assert next_one.status_code == 200 and next_one.json()["model_version"] == new


def test_sighup_takes_up_a_new_version_at_once(models: Path, bank_dir: Path, tmp_path: Path) -> None:
    server = ApiProcess(tmp_path, CLV_MODEL_DIR=str(models), CLV_DATA_DIR=str(bank_dir), CLV_RELOAD_SECONDS="3600")
    try:
        with httpx.Client(base_url=server.ready(), timeout=10) as http:
            old = serving_version(http)
            new = resave(artifacts.load(models), models).name.removeprefix(artifacts.PREFIX)
            time.sleep(1.0)
            assert serving_version(http) == old  # no look for an hour without the signal
            server.process.send_signal(signal.SIGHUP)
            wait_until(lambda: serving_version(http) == new, "/health showing the new version after SIGHUP", 10)
    finally:
        server.stop()
    assert "refused" not in server.log.read_text()


# ---- /metrics, /livez, /readyz -------------------------------------------------------------------------


@pytest.fixture
def no_drift_published() -> None:
    """The metrics registry is the test process's: drift an earlier test's app published would still show."""
    telemetry.INPUT_DRIFT.clear()
    telemetry.PREDICTION_DRIFT.clear()


def test_metrics_count_requests_by_route_and_status_and_the_customers_scored(
    settings: Settings, bank_dir: Path, tmp_path: Path, example: dict
) -> None:
    """The counters of one test process are shared by every app in it: what is asserted is their increase."""
    limited = settings.model_copy(update={"rate_limit": "1/minute", "log_file": tmp_path / "limited.log"})
    empty = Settings(
        data_dir=bank_dir, model_dir=tmp_path / "none", log_file=tmp_path / "empty.log", train_on_start=False
    )
    own = settings.model_copy(update={"log_file": tmp_path / "api.log"})
    with (
        TestClient(create_app(own)) as client,
        TestClient(create_app(limited)) as limited_client,
        TestClient(create_app(empty)) as empty_client,
    ):
        before = samples(client.get("/metrics").text)
        statuses = [
            client.post(PREDICT, json=example).status_code,
            client.post(PREDICT, json={**example, "age": 5}).status_code,
            limited_client.post(PREDICT, json=example).status_code,
            limited_client.post(PREDICT, json=example).status_code,
            empty_client.post(PREDICT, json=example).status_code,
            client.get("/no/such/page-12345").status_code,
        ]
        assert statuses == [200, 422, 200, 429, 503, 404]
        counted = samples(client.get("/metrics").text)
        batch = client.post(BATCH, json={"customers": [example] * 5}).json()["predictions"]
        after = samples(client.get("/metrics").text)

    requests = "clv_http_requests_total"
    for status, times in {"200": 2, "422": 1, "429": 1, "503": 1}.items():
        assert increase(requests, before, counted, method="POST", route=PREDICT, status=status) == times, status
    assert increase(requests, before, counted, method="GET", route="other", status="404") == 1
    assert not any("no/such" in str(labels) for _, labels in after)  # one series a route, never one a URL

    latency = "clv_http_request_duration_seconds"
    post = {"method": "POST", "route": PREDICT}
    assert increase(f"{latency}_count", before, counted, **post) == 5
    assert increase(f"{latency}_bucket", before, counted, **post, le="+Inf") == 5
    assert increase(f"{latency}_sum", before, counted, **post) > 0
    buckets = [v for (n, labels), v in counted.items() if n == f"{latency}_bucket" and post.items() < labels]
    assert len(buckets) > 5 and buckets == sorted(buckets)  # cumulative, by increasing bound

    assert increase("clv_predictions_total", counted, after) == 5  # a batch of 5 customers counts 5
    assert increase("clv_predicted_clv_count", counted, after) == 5
    scored = [p["predicted_clv"] for p in batch]
    for (name, labels), count in after.items():  # each customer in the buckets at or above its prediction
        if name == "clv_predicted_clv_bucket":
            bound = float(dict(labels)["le"])
            assert count - value(counted, name, **dict(labels)) == sum(v <= bound for v in scored), bound


def test_metrics_off_serves_predictions_without_metrics_or_drift(
    settings: Settings, tmp_path: Path, example: dict
) -> None:
    """CLV_METRICS=false, for a deployment without Prometheus: no /metrics, nothing counted, no drift window."""
    with TestClient(create_app(settings.model_copy(update={"log_file": tmp_path / "on.log"}))) as counting:
        before = samples(counting.get("/metrics").text)
        off = settings.model_copy(update={"metrics": False, "log_file": tmp_path / "off.log"})
        with TestClient(create_app(off)) as client:
            assert client.post(BATCH, json={"customers": [example] * 60}).status_code == 200
            assert client.post(PREDICT, json=example).status_code == 200
            assert client.get("/metrics").status_code == 404
            assert client.get("/model").json()["drift"] is None
            assert "/metrics" not in client.get("/openapi.json").json()["paths"]
        after = samples(counting.get("/metrics").text)
    assert increase("clv_predictions_total", before, after) == 0
    assert increase("clv_http_requests_total", before, after, method="POST", route=PREDICT, status="200") == 0


@pytest.mark.usefixtures("no_drift_published")
def test_input_drift_appears_after_50_customers_and_matches_the_model_card(
    settings: Settings, tmp_path: Path, example: dict
) -> None:
    """Every request carries the README example's age, so the age's PSI is high; the example has no ledger,
    so the ledger's features are not measured."""
    with TestClient(create_app(settings.model_copy(update={"log_file": tmp_path / "api.log"}))) as client:
        for _ in range(4):
            assert client.post(PREDICT, json=example).status_code == 200
        assert client.post(BATCH, json={"customers": [example] * 45}).status_code == 200
        early = samples(client.get("/metrics").text)
        assert value(early, "clv_drift_window_rows") == 49
        assert all(math.isnan(v) for v in labelled(early, "clv_input_drift_psi", "feature").values())
        assert client.get("/model").json()["drift"] is None

        assert client.post(BATCH, json={"customers": [example] * 11}).status_code == 200
        scraped = samples(client.get("/metrics").text)
        card = client.get("/model").json()["drift"]

    published = labelled(scraped, "clv_input_drift_psi", "feature")
    psi = {name: psi_value for name, psi_value in published.items() if not math.isnan(psi_value)}
    assert value(scraped, "clv_drift_window_rows") == 60
    assert psi["age"] > SIGNIFICANT and "income" in psi
    assert not set(LEDGER_FEATURES) & set(psi)  # published as NaN: not measured
    assert all(math.isnan(published[name]) for name in LEDGER_FEATURES)
    assert card["rows"] == 60 and "age" in card["drifted"]
    assert psi == pytest.approx(card["features"], abs=1e-9)
    assert value(scraped, "clv_prediction_drift_psi") == pytest.approx(card["prediction"], abs=1e-9)


@pytest.mark.usefixtures("no_drift_published")
def test_metrics_drop_the_drift_of_a_feature_no_longer_measured(
    settings: Settings, tmp_path: Path, example: dict
) -> None:
    with_ledger = {**example, "ledger": [{"month": f"2024-{m:02d}", "net_margin": 10.0 * m} for m in range(1, 13)]}
    window = settings.model_copy(update={"drift_window": 50, "log_file": tmp_path / "api.log"})
    with TestClient(create_app(window)) as client:
        assert client.post(BATCH, json={"customers": [with_ledger] * 50}).status_code == 200
        measured = labelled(samples(client.get("/metrics").text), "clv_input_drift_psi", "feature")
        assert set(LEDGER_FEATURES) <= set(measured)
        assert client.post(BATCH, json={"customers": [example] * 50}).status_code == 200  # the window, renewed
        psi = labelled(samples(client.get("/metrics").text), "clv_input_drift_psi", "feature")
        card = client.get("/model").json()["drift"]
    assert not set(LEDGER_FEATURES) & set(card["features"])
    assert {name for name, psi_value in psi.items() if not math.isnan(psi_value)} == set(card["features"])
    assert all(math.isnan(psi[name]) for name in LEDGER_FEATURES)  # not measured now, never a stale value


def test_livez_always_and_readyz_only_with_a_model(client: TestClient, bank_dir: Path, tmp_path: Path) -> None:
    version = serving_version(client)
    assert client.get("/livez").status_code == 200 and client.get("/livez").json() == {"status": "alive"}
    assert client.get("/readyz").json() == {"status": "ready", "model_version": version}
    empty = Settings(
        data_dir=bank_dir, model_dir=tmp_path / "none", log_file=tmp_path / "api.log", train_on_start=False
    )
    with TestClient(create_app(empty)) as unready:
        live, ready = unready.get("/livez"), unready.get("/readyz")
    assert live.status_code == 200 and live.json() == {"status": "alive"}
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    assert "no model" in ready.json()["reason"] and int(ready.headers["Retry-After"]) > 0

    paths = client.get("/openapi.json").json()["paths"]
    assert "200" in paths["/livez"]["get"]["responses"]
    assert {"200", "503"} <= set(paths["/readyz"]["get"]["responses"])


# ---- two workers; one rate limit for several processes -------------------------------------------------


def worker_processes(server: ApiProcess) -> list[psutil.Process]:
    """uvicorn's worker processes under the server (multiprocessing's resource tracker is not one)."""
    children = psutil.Process(server.process.pid).children()
    return [child for child in children if "--multiprocessing-fork" in child.cmdline()]


def predictions_by_worker(server: ApiProcess) -> dict[int, float]:
    """Customers each worker scored, read from its own file of prometheus-client's multiprocess folder."""
    found = {}
    for worker in worker_processes(server):
        folder = Path(worker.environ()["PROMETHEUS_MULTIPROC_DIR"])
        path = folder / f"counter_{worker.pid}.db"
        values = MmapedDict.read_all_values_from_file(str(path)) if path.exists() else []
        found[worker.pid] = sum(v for key, v, *_ in values if json.loads(key)[1] == "clv_predictions_total")
    return found


def test_two_workers_answer_and_share_their_metrics_and_drift_window(
    model_dir: Path, bank_dir: Path, tmp_path: Path, example: dict
) -> None:
    """Counters sum both workers; the drift window holds the rows of both, so that /metrics and the model
    card report the same drift and window rows whichever worker answers."""
    server = ApiProcess(tmp_path, CLV_MODEL_DIR=str(model_dir), CLV_DATA_DIR=str(bank_dir), CLV_WORKERS="2")
    try:
        # wait for both workers to have started, so that either may take the requests
        base = server.ready(timeout=120)
        wait_until(
            lambda: (
                server.log.read_text().count("Application startup complete.") >= 2
                and len(worker_processes(server)) == 2
            ),
            "two workers started",
            120,
        )
        # a new connection each time, so that the kernel hands them to either worker
        statuses = [httpx.post(f"{base}{PREDICT}", json=example, timeout=30).status_code for _ in range(80)]
        assert statuses == [200] * 80
        by_worker = predictions_by_worker(server)
        assert len(by_worker) == 2 and min(by_worker.values()) > 0 and sum(by_worker.values()) == 80, by_worker
        drifts, cards = set(), set()
        for _ in range(8):
            scraped = samples(httpx.get(f"{base}/metrics", timeout=30).text)
            assert value(scraped, "clv_http_requests_total", method="POST", route=PREDICT, status="200") == 80
            assert value(scraped, "clv_predictions_total") == 80
            assert value(scraped, "clv_drift_window_rows") == 80
            psi = labelled(scraped, "clv_input_drift_psi", "feature")
            drifts.add((value(scraped, "clv_prediction_drift_psi"), psi["income"], psi["age"]))
            card = httpx.get(f"{base}/model", timeout=30).json()["drift"]
            cards.add((card["rows"], card["features"]["income"]))
        assert len(drifts) == 1 and len(cards) == 1, (drifts, cards)
        assert cards == {(80, psi["income"])}
    finally:
        server.stop()


def test_two_workers_start_on_a_slow_host(model_dir: Path, bank_dir: Path, tmp_path: Path) -> None:
    """Each worker takes 6 s more to start (a sitecustomize that sleeps in multiprocessing's children): the
    service comes up with no worker killed for being slow."""
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(
        "import sys, time\n\nif '--multiprocessing-fork' in sys.argv:\n    time.sleep(6)\n"
    )
    server = ApiProcess(
        tmp_path, CLV_MODEL_DIR=str(model_dir), CLV_DATA_DIR=str(bank_dir), CLV_WORKERS="2", PYTHONPATH=str(slow)
    )

    def up_or_killed() -> bool:
        if "died" in server.log.read_text():
            return True
        try:
            return httpx.get(f"{server.base}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up_or_killed, "the service up, or a worker killed", 60)
    finally:
        server.stop()
    assert "died" not in server.log.read_text(), server.log.read_text()


def predict_statuses(base: str, example: dict, times: int) -> list[int]:
    return [httpx.post(f"{base}{PREDICT}", json=example, timeout=30).status_code for _ in range(times)]


def test_a_redis_rate_limit_is_one_budget_for_every_process(
    bank_dir: Path, model_dir: Path, tmp_path: Path, example: dict
) -> None:
    """4 a minute through Redis: 2 requests to each of two processes spend the budget; in memory each process
    has its own 4."""
    with redis_server(tmp_path) as redis:
        servers: list[ApiProcess] = []
        try:
            for i, storage in enumerate((redis, redis, "memory://", "memory://")):
                folder = tmp_path / f"server{i}"
                folder.mkdir()
                limited = {"CLV_RATE_LIMIT": "4/minute", "CLV_RATE_LIMIT_STORAGE": storage}
                servers.append(ApiProcess(folder, CLV_MODEL_DIR=str(model_dir), CLV_DATA_DIR=str(bank_dir), **limited))
            a, b, memory_a, memory_b = [server.ready() for server in servers]
            assert predict_statuses(a, example, 2) + predict_statuses(b, example, 2) == [200] * 4
            for base in (a, b):
                refused = httpx.post(f"{base}{PREDICT}", json=example, timeout=30)
                assert refused.status_code == 429
                assert 0 < int(refused.headers["Retry-After"]) <= 60
            assert predict_statuses(memory_a, example, 5) == [200, 200, 200, 200, 429]
            assert predict_statuses(memory_b, example, 5) == [200, 200, 200, 200, 429]
        finally:
            for server in servers:
                server.stop()
