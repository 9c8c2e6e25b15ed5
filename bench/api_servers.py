"""The servers bench_api.py puts under load: the current api.py and its variants, a baseline checkout's api.py, and
the bare FastAPI reference endpoint, each on a free loopback port; the benchmark's API key; and the check that
an answer is a real prediction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from common import HOST, ROOT, free_port, train_model

from clv.service.schemas.requests import EXAMPLE  # the README request, from the one schema

VARIANTS = {  # --compare: a name, and the settings that differ from the current api's
    "metrics": ("metrics off", {"CLV_METRICS": "false"}),
    "workers": ("2 workers", {"CLV_WORKERS": "2"}),
    "keys": ("keys off", {"CLV_API_KEYS_FILE": "no_api_keys.json"}),  # in the benchmark's folder: no such file
}
KEY: list[str] = []  # the key `python api.py keys add` printed at start, sent by every request
REFERENCE_APP = '''"""The reference: a bare FastAPI POST endpoint that parses the JSON body and returns a small JSON."""
from fastapi import FastAPI

app = FastAPI()


@app.post("/predict")
async def predict(body: dict) -> dict:
    return {"customer_id": body.get("customer_id"), "predicted_clv": 123.45}
'''


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"server for {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    sys.exit(f"server for {url} did not answer within {timeout:.0f} s")


def api_env(tmp: Path, model_dir: Path, port: int, log_file: str) -> dict[str, str]:
    """The service's settings, the same for the current api and a baseline but for the port and the log."""
    return {
        **os.environ,
        "CLV_HOST": HOST,
        "CLV_PORT": str(port),
        "CLV_MODEL_DIR": str(model_dir),
        "CLV_DATA_DIR": str(tmp / "no-data"),  # never train on the repository's data/
        "CLV_TRAIN_ON_START": "false",
        "CLV_RATE_LIMIT": "100000000/minute",
        "CLV_LOG_FILE": str(tmp / log_file),
        "CLV_API_KEYS_FILE": str(tmp / "api_keys.json"),  # the benchmark's key, whatever the checkout holds
    }


def start_servers(
    tmp: Path, model_dir: Path, variants: list[str]
) -> tuple[dict[str, tuple[subprocess.Popen, int]], list[subprocess.Popen]]:
    """The current api, its --compare variants, and the bare reference endpoint, each answering."""
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    processes: list[subprocess.Popen] = []
    try:
        for name, extra in [("api", {}), *(VARIANTS[v] for v in variants)]:
            port = free_port()
            file = name.replace(" ", "-")
            env = {**api_env(tmp, model_dir, port, f"{file}.log"), **extra}
            if "CLV_API_KEYS_FILE" in extra:
                env["CLV_API_KEYS_FILE"] = str(tmp / extra["CLV_API_KEYS_FILE"])
            with (tmp / f"{file}.out").open("wb") as out:
                process = subprocess.Popen([sys.executable, "api.py"], cwd=ROOT, env=env, stdout=out, stderr=out)
            processes.append(process)
            wait_until_started(tmp / f"{file}.out", int(env.get("CLV_WORKERS", "1")), process)
            wait_until_up(f"http://{HOST}:{port}/health", process)
            servers[name] = (process, port)
        (tmp / "reference_app.py").write_text(REFERENCE_APP)
        port = free_port()
        reference = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "reference_app:app",
                "--host",
                HOST,
                "--port",
                str(port),
                "--workers",
                "1",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(reference)
        wait_until_up(f"http://{HOST}:{port}/openapi.json", reference)
        servers["reference"] = (reference, port)
    except BaseException:
        stop_servers(processes)
        raise
    return servers, processes


def make_key(tmp: Path) -> str:
    """A key with clv:predict in the benchmark's keys file, made as the README says; the last line `python api.py
    keys add` prints."""
    command = [sys.executable, "api.py", "keys", "add", "bench", "--scopes", "clv:predict"]
    env = {**os.environ, "CLV_API_KEYS_FILE": str(tmp / "api_keys.json")}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        sys.exit(f"api.py keys add failed: {done.stderr}")
    return done.stdout.splitlines()[-1]


def wait_until_started(log: Path, workers: int, process: subprocess.Popen, timeout: float = 120) -> None:
    """Until every one of a server's worker processes has said that its start-up is complete: with two
    workers, /health answers as soon as the first one does."""
    deadline = time.monotonic() + timeout
    while log.read_text(errors="replace").count("Application startup complete") < workers:
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"server {log.stem} did not start its {workers} worker(s):\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def first_answer(url: str, process: subprocess.Popen, timeout: float = 120) -> tuple[int | None, str]:
    """The status and body of the first answer of `url` (a server answers /health once its start-up is over:
    200 with a model, 503 and the reason without); None when the server exits or does not answer in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.read(500).decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(500).decode(errors="replace")
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    return None, "exited" if process.poll() is not None else f"no answer within {timeout:.0f} s"


def describe_checkout(checkout: Path) -> str:
    """The checkout and its commit (`git log`, read only); exits unless python started there imports its own clv."""
    git = ["git", "-C", str(checkout)]
    commit = subprocess.run([*git, "log", "-1", "--format=%h %s"], capture_output=True, text=True).stdout.strip()
    probe = [sys.executable, "-c", "import clv; print(clv.__file__)"]  # '' (the checkout) first on sys.path
    imported = subprocess.run(probe, cwd=checkout, capture_output=True, text=True).stdout.strip()
    if Path(imported).resolve().parent.parent != checkout:
        sys.exit(f"--baseline {checkout}: python started there imports clv from {imported}, not from the checkout")
    return f"{checkout} at {commit or 'an unknown commit'}"


def start_baseline(
    tmp: Path, checkout: Path, model_dir: Path, customers: int, processes: list[subprocess.Popen]
) -> tuple[subprocess.Popen, int, str]:
    """The baseline's own api.py, started from its checkout with the current api's settings: on the same model
    when it serves it, else on one that its own CLIs generate and train. Returns the server, its port, and the
    model it serves."""
    note, why = "the same model", ""
    for attempt in range(2):
        if attempt:
            note = "a model of its own format, trained by its own model.py train (the current model did not load)"
            print(f"  the baseline cannot serve {model_dir} ({why}); training one with its own CLIs ...", flush=True)
            model_dir = train_model(tmp / "baseline", customers, checkout)
        port = free_port()
        env = api_env(tmp, model_dir, port, f"baseline-{attempt}.log")
        with (tmp / f"baseline-{attempt}.out").open("wb") as out:
            process = subprocess.Popen([sys.executable, "api.py"], cwd=checkout, env=env, stdout=out, stderr=out)
        processes.append(process)
        status, why = first_answer(f"http://{HOST}:{port}/health", process)
        if status == 200 and predicts(port, checkout):
            return process, port, note
        why = why if status != 200 else "its /predict/clv did not answer with a prediction"
        stop_servers([process])
        processes.remove(process)
    log = (tmp / "baseline-1.out").read_text()[-3000:]
    sys.exit(f"the baseline's api.py did not serve its own model either; its output:\n{log}")


def stop_servers(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def predicts(port: int, checkout: Path) -> bool:
    """Whether a server answers the benchmark's request with a prediction. A 422 ends the run: the baseline
    refuses the request itself, so it cannot be put under the same load."""
    try:
        check_answer(port)
    except urllib.error.HTTPError as exc:
        if exc.code == 422:
            sys.exit(f"--baseline {checkout}: its api.py refuses the benchmark's request (422): {exc.read()[:500]!r}")
        return False
    return True


def check_answer(port: int) -> dict:
    """One request of the example, to be sure the benchmark measures real predictions."""
    key = {"Authorization": f"Bearer {KEY[0]}"} if KEY else {}
    request = urllib.request.Request(
        f"http://{HOST}:{port}/predict/clv",
        data=json.dumps(EXAMPLE).encode(),
        headers={"Content-Type": "application/json", **key},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    if "predicted_clv" not in answer:
        sys.exit(f"unexpected answer: {answer}")
    return answer
