"""Slow and many clients, on real sockets against `python api.py`: a body that stops halfway is cut with 408
after CLV_BODY_TIMEOUT_SECONDS and its connection closed, and past CLV_MAX_CONNECTIONS open connections a new
request gets 503, while /health keeps answering."""

from __future__ import annotations

import json
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clv.service.schemas.requests import EXAMPLE
from tests.servers import ApiProcess

BODY = json.dumps(EXAMPLE).encode()


def half_a_body(port: int) -> socket.socket:
    """A client that sends a request's headers and half its body, then nothing more."""
    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST /predict/clv HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode()
    client.sendall(head + BODY[: len(BODY) // 2])
    return client


def answer(client: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout raises)."""
    received = b""
    while chunk := client.recv(65536):
        received += chunk
    return received


def health_seconds(base: str, times: int = 20) -> list[float]:
    """The wall time of `times` GET /health, each on a new connection."""
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200
        seconds.append(time.perf_counter() - started)
    return seconds


@pytest.fixture
def server(model_dir: Path, bank_dir: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ApiProcess]:
    settings = {"CLV_MODEL_DIR": str(model_dir), "CLV_DATA_DIR": str(bank_dir), "CLV_BODY_TIMEOUT_SECONDS": "3"}
    process = ApiProcess(tmp_path, **settings, **getattr(request, "param", {}))
    try:
        process.ready()
        yield process
    finally:
        process.stop()


def test_300_clients_that_stop_halfway_are_all_cut_with_408_and_health_stays_quick(server: ApiProcess) -> None:
    clients = [half_a_body(server.port) for _ in range(300)]
    started = time.monotonic()
    try:
        quick = health_seconds(server.base)  # while the 300 wait for the rest of their bodies
        answers = [answer(client) for client in clients]
    finally:
        for client in clients:
            client.close()
    waited = time.monotonic() - started
    assert statistics.median(quick) < 0.1, quick
    assert all(text.startswith(b"HTTP/1.1 408 ") for text in answers), {text[:40] for text in answers}
    assert b'"detail":"request body not complete within 3 s"' in answers[0]
    assert 2.5 < waited < 30, waited  # cut at the timeout, and every connection closed by the server (EOF)
    # the service is none the worse: a whole request is answered at once
    assert httpx.post(f"{server.base}/predict/clv", json=EXAMPLE, timeout=10).status_code == 200


def test_an_answer_names_no_server_software(server: ApiProcess) -> None:
    answer = httpx.post(f"{server.base}/predict/clv", json=EXAMPLE, timeout=10)
    assert answer.status_code == 200 and "date" in answer.headers
    assert "server" not in answer.headers, answer.headers["server"]


@pytest.mark.parametrize("server", [{"CLV_MAX_CONNECTIONS": "40"}], indirect=True)
def test_past_the_connection_bound_a_request_gets_503_until_the_slow_ones_are_cut(server: ApiProcess) -> None:
    clients = [half_a_body(server.port) for _ in range(40)]
    try:
        time.sleep(0.5)  # the server has taken them all up
        busy = httpx.post(f"{server.base}/predict/clv", json=EXAMPLE, timeout=10)
        probe = httpx.get(f"{server.base}/health", timeout=10)
        for client in clients:
            answer(client)
    finally:
        for client in clients:
            client.close()
    assert busy.status_code == 503 and probe.status_code == 503  # answered at once, not left waiting
    assert httpx.post(f"{server.base}/predict/clv", json=EXAMPLE, timeout=10).status_code == 200
