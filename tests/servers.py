"""Real servers for the tests, each on a free loopback port and stopped afterwards: the service as
`python api.py` in its own process, or under uvicorn in a thread of the test process."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI

from tests.conftest import ROOT


def run_script(script: str, *args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`python SCRIPT ARGS` from the repository root, with `env` as its only CLV_* settings (none of this shell's)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CLV_")} | env
    return subprocess.run(
        [sys.executable, script, *map(str, args)], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=300
    )


def wait_until(check: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ApiProcess:
    """`python api.py` on a free port, started at once with CLV_* settings; `ready()` waits for /health."""

    def __init__(self, log_dir: Path, **env: str) -> None:
        self.port = free_port()
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CLV_")}
        environ |= {
            "CLV_PORT": str(self.port),
            "CLV_HOST": "127.0.0.1",
            "CLV_LOG_FILE": str(log_dir / "api.log"),
            "CLV_API_KEYS_FILE": str(log_dir / "api_keys.json"),  # none unless a test adds keys there
            "CLV_RATE_LIMIT": "10000/minute",
            **env,
        }
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / "server.out"
        self._out = self.log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "api.py"], cwd=ROOT, env=environ, stdout=self._out, stderr=subprocess.STDOUT
        )

    def ready(self, status: int = 200, timeout: float = 60) -> str:
        """The base URL once /health answers `status` (503: up, with no model serving)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == status:
                    return self.base
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"/health did not answer {status} in {timeout:.0f} s:\n{self.log.read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._out.close()


@contextmanager
def uvicorn_thread(app: FastAPI) -> Iterator[str]:
    """The app under a real uvicorn server on a free loopback port, in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A real `redis-server` on a free loopback port that saves nothing to disk; yields its redis:// address."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is missing: `make test` installs it (Debian's redis-server, with apt-get)")
    port = free_port()
    log = folder / "redis.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                executable,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 15
            while not _pong(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not answer PING on port {port}:\n{log.read_text()}")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def refaults() -> int:
    """Page faults of this thread in filling 256 MB again after the same 256 MB were freed: none where the process
    keeps what it frees (clv.common.cluster.keep_freed_memory), one a page where it maps them afresh."""
    np.ones(1 << 25)  # freed at once
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    np.ones(1 << 25)
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before
