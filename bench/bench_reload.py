"""Models rolled out under load: promote a new version, then a tampered one, while requests flow.

Run `python bench/bench_reload.py`. It trains a model on a small generated bank, serves it with
`python api.py` (CLV_RELOAD_SECONDS, default 10 as in production), and sends POST /predict/clv at
concurrency 8 for about 20 s from another process (bench/load.py). Meanwhile it promotes
a second version and measures the seconds until /health shows it, then points `latest` at a copy of that
version with one byte of its model changed, and checks that the service refuses it and keeps serving.
Every version is signed with a key made for the run, and the service verifies with CLV_MODEL_VERIFY_KEY, as a
bank runs it (docs/operations.md#signed-models); it also prints how long loading a version takes (verify the
signature and every file, read the arrays, rebuild the trees), what a reload costs off the event loop.
Targets: no non-2xx answer; the new version served within CLV_RELOAD_SECONDS + 1 s; the tampered
version refused (counted in /metrics) while the good one serves.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import HOST, ROOT, free_port, train_model, verdict

from clv.model import artifacts, signing


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def metric(url: str, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name) and labels in line]
    return sum(values)


def wait_for(predicate, timeout: float, step: float = 0.05) -> float | None:
    """Seconds until `predicate()` holds, or None after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(step)
    return None


def versions(work: Path) -> tuple[Path, str, str, Path, Path]:
    """A trained model (A), a second version of it (B), both signed, a tampered copy of B (C), and the public key."""
    models = train_model(work, 3000)
    private, public = signing.keygen(work / "keys")
    first = artifacts.load_folder(artifacts.promote(models, artifacts.LATEST, signing_key=private), public)
    importance = artifacts.read_importance(first.path)
    second = artifacts.save(first.model, first.metadata.model_dump(), importance, first.profile, models, private)
    artifacts.point_latest(models, first.path.name)  # A serves first
    tampered = models / f"{second.name}-tampered"
    shutil.copytree(second, tampered)
    model_file = tampered / artifacts.ARRAYS
    raw = bytearray(model_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    model_file.write_bytes(bytes(raw))
    return models, first.version, second.name, tampered, public


def load_seconds(models: Path, folder: str, public: Path, times: int = 5) -> float:
    """The median seconds of loading a signed version, verified."""
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        artifacts.load(models, folder, public)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reload-seconds", type=float, default=10.0, help="CLV_RELOAD_SECONDS (default 10)")
    parser.add_argument("--seconds", type=float, default=20.0, help="load duration (default 20)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_reload_") as tmp:
        work = Path(tmp)
        print("training a model on 3,000 generated customers ...", flush=True)
        models, version_a, folder_b, tampered, public = versions(work)
        loading = load_seconds(models, folder_b, public)
        port = free_port()
        url = f"http://{HOST}:{port}"
        env = {
            **os.environ,
            "CLV_MODEL_DIR": str(models),
            "CLV_DATA_DIR": str(work / "data"),
            "CLV_PORT": str(port),
            "CLV_LOG_FILE": str(work / "api.log"),
            "CLV_RATE_LIMIT": "10000000/minute",
            "CLV_RELOAD_SECONDS": str(args.reload_seconds),
            "CLV_MODEL_VERIFY_KEY": str(public),
        }
        server = subprocess.Popen(
            [sys.executable, "api.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            assert wait_for(lambda: _ok(url), 60) is not None, "the service did not start"
            figures = run_under_load(url, port, models, version_a, folder_b, tampered, args)
        finally:
            server.terminate()
            server.wait(30)
    report(figures | {"loading": loading}, args.reload_seconds)


def _ok(url: str) -> bool:
    try:
        return get(f"{url}/health")["status"] == "ok"
    except OSError:
        return False


def run_under_load(
    url: str, port: int, models: Path, version_a: str, folder_b: str, tampered: Path, args: argparse.Namespace
) -> dict:
    load = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "load.py"),
            "--port",
            str(port),
            "--path",
            "/predict/clv",
            "--concurrency",
            "8",
            "--seconds",
            str(args.seconds),
            "--max-requests",
            "10000000",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    version_b = folder_b.removeprefix(artifacts.PREFIX)
    artifacts.promote(models, folder_b)
    took = wait_for(lambda: get(f"{url}/health")["model_version"] == version_b, args.reload_seconds + 10)
    time.sleep(1)
    artifacts.point_latest(models, tampered.name)  # promote would refuse it; an operator's mistake would not
    time.sleep(args.reload_seconds + 2)
    serving = get(f"{url}/health")["model_version"]
    refused = metric(url, "clv_model_reloads_total", 'result="refused"')
    succeeded = metric(url, "clv_model_reloads_total", 'result="succeeded"')
    out, _ = load.communicate(timeout=args.seconds + 60)
    result = json.loads(out.strip().splitlines()[-1])
    return {
        "a": version_a,
        "b": version_b,
        "took": took,
        "serving_after_tampered": serving,
        "refused": refused,
        "succeeded": succeeded,
        "load": result,
    }


def report(figures: dict, reload_seconds: float) -> None:
    load = figures["load"]
    took = figures["took"]
    print(
        f"\nload: {load['ok']:,} answered 200, {load['errors']} not ({load['error_kinds']}), "
        f"{load['rps']:,.0f} req/s at concurrency 8, p99 {load['p99_ms']:.1f} ms"
    )
    milliseconds = figures["loading"] * 1000
    print(f"loading a signed version (signature, manifest, arrays, trees): {milliseconds:.0f} ms (median of 5)")
    print(
        f"new version served after {'never' if took is None else f'{took:.2f} s'} "
        f"(CLV_RELOAD_SECONDS {reload_seconds:g})"
    )
    print(
        f"after the tampered version: serving {figures['serving_after_tampered']} (the good one: "
        f"{figures['serving_after_tampered'] == figures['b']}), reloads refused {figures['refused']:g}, "
        f"succeeded {figures['succeeded']:g}"
    )
    checks = [
        ("non-2xx answers", f"{load['errors']}", "0", load["errors"] == 0),
        (
            "seconds to serve the new version",
            "never" if took is None else f"{took:.2f}",
            f"<= {reload_seconds + 1:g}",
            took is not None and took <= reload_seconds + 1,
        ),
        (
            "tampered version refused, good one serving",
            f"refused {figures['refused']:g}",
            "refused, still serving",
            figures["refused"] >= 1 and figures["serving_after_tampered"] == figures["b"],
        ),
    ]
    print(f"\n{'target':44s} {'measured':>14s} {'target':>24s}")
    for name, measured, target, met in checks:
        print(f"{name:44s} {measured:>14s} {target:>24s}  {verdict(met)}")


if __name__ == "__main__":
    main()
