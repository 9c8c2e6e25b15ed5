"""Throughput and latency of POST /predict/clv under uvicorn, against a trivial FastAPI POST endpoint.

Run `python bench/bench_api.py` (`--model-dir` to serve a trained model; without it a small bank is
generated and a model trained in a temporary folder). Both servers run as `uvicorn` with one worker on
127.0.0.1; the load comes from a separate process (a minimal keep-alive HTTP/1.1 client on asyncio and
uvloop), so that it does not share the server's GIL. Each concurrency level runs for a bounded time and
request count. Every request computes its prediction: the service has no response cache.

`--baseline DIR` also serves DIR's own api.py (another checkout of this repository, e.g. a git worktree of main),
started from DIR with the same settings and the same model when DIR can serve it (else on a model that DIR's own
`data_gen.py` and `model.py train` make), and puts it under the same load right after the current api at every
level; it prints both throughputs and their ratio (target: no drop of more than 5% at concurrency 8). A few per
cent is within the noise of one pair of runs on a shared machine: `--rounds N` runs N pairs per level in turns
(api then baseline, then baseline then api, ...) and judges the median ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clv.schema import EXAMPLE  # noqa: E402 - the README request, from the one schema

HOST = "127.0.0.1"  # loopback only
TARGET_RATIO_AT_8 = 0.30
TARGET_P50_AT_1_MS = 3.0
TARGET_VS_BASELINE = 0.95  # the current api's throughput at concurrency 8 over the baseline's, in the same run
REFERENCE_APP = '''"""The reference: a bare FastAPI POST endpoint that parses the JSON body and returns a small JSON."""
from fastapi import FastAPI

app = FastAPI()


@app.post("/predict")
async def predict(body: dict) -> dict:
    return {"customer_id": body.get("customer_id"), "predicted_clv": 123.45}
'''


# ---- the load generator (runs in its own process) ----------------------------------------------


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request on a kept-alive connection; return the status after reading the whole body."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise ValueError("response without Content-Length")
    await reader.readexactly(length)
    return status


async def _worker(
    port: int, request: bytes, stop: float, budget: list[int], latencies: list[float], errors: list[str]
) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while time.perf_counter() < stop and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            try:
                status = await asyncio.wait_for(_one(reader, writer, request), timeout=10)
            except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError) as exc:
                errors.append(type(exc).__name__)
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, port)
                continue
            if status == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors.append(str(status))
    finally:
        writer.close()


async def _load(port: int, path: str, concurrency: int, seconds: float, max_requests: int) -> dict:
    body = json.dumps(EXAMPLE).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors: list[str] = []
    budget = [max_requests]
    started = time.perf_counter()
    stop = started + seconds
    await asyncio.gather(
        *(_worker(port, request, stop, budget, latencies, errors) for _ in range(concurrency)), return_exceptions=False
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    n = len(latencies)

    def quantile(q: float) -> float:
        return latencies[min(n - 1, int(q * n))] * 1000 if n else float("nan")

    return {
        "ok": n,
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "seconds": elapsed,
        "rps": n / elapsed,
        "p50_ms": quantile(0.50),
        "p99_ms": quantile(0.99),
    }


def load_stage(args: argparse.Namespace) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # plain asyncio still works, only slower on the client side
        pass
    result = asyncio.run(_load(args.port, args.path, args.concurrency, args.seconds, args.max_requests))
    print(json.dumps(result))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), NaN where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def run_load(
    server: subprocess.Popen, port: int, path: str, concurrency: int, seconds: float, warmup: float, max_requests: int
) -> dict:
    """One level against one server (after an unmeasured warm-up run), and the server's CPU time per
    answered request, which hardly changes when other processes take CPU from this machine."""

    def load(duration: float) -> dict:
        command = [
            sys.executable, __file__, "--stage", "load", "--port", str(port), "--path", path,
            "--concurrency", str(concurrency), "--seconds", str(duration), "--max-requests", str(max_requests),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
        if result.returncode != 0:
            sys.exit(f"load generator failed (exit {result.returncode}):\n{result.stderr}")
        return json.loads(result.stdout.splitlines()[-1])

    if warmup > 0:
        load(warmup)
    cpu_before = cpu_seconds(server.pid)
    figures = load(seconds)
    figures["cpu_ms"] = (cpu_seconds(server.pid) - cpu_before) * 1000 / max(figures["ok"], 1)
    return figures


# ---- the servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


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


def train_model(tmp: Path, customers: int, checkout: Path = ROOT) -> Path:
    """A small generated bank and a model trained on it, through the real CLIs of a checkout."""
    data, models = tmp / "data", tmp / "models"
    for command in (
        [sys.executable, "data_gen.py", "--customers", str(customers), "--out", str(data)],
        [sys.executable, "model.py", "train", "--data-dir", str(data), "--model-dir", str(models)],
    ):
        result = subprocess.run(command, cwd=checkout, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"{' '.join(command[1:3])} failed (exit {result.returncode}):\n{result.stderr}")
    return models


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
    }


def start_servers(tmp: Path, model_dir: Path) -> tuple[dict[str, tuple[subprocess.Popen, int]], list[subprocess.Popen]]:
    api_port, reference_port = free_port(), free_port()
    env = api_env(tmp, model_dir, api_port, "api.log")
    (tmp / "reference_app.py").write_text(REFERENCE_APP)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    api = subprocess.Popen([sys.executable, "api.py"], cwd=ROOT, env=env, **quiet)
    reference = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "reference_app:app", "--host", HOST, "--port", str(reference_port),
         "--workers", "1", "--no-access-log", "--log-level", "warning"],
        cwd=tmp, **quiet,
    )  # fmt: skip
    processes = [api, reference]
    try:
        wait_until_up(f"http://{HOST}:{api_port}/health", api)
        wait_until_up(f"http://{HOST}:{reference_port}/openapi.json", reference)
    except BaseException:
        stop_servers(processes)
        raise
    return {"api": (api, api_port), "reference": (reference, reference_port)}, processes


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
    request = urllib.request.Request(
        f"http://{HOST}:{port}/predict/clv",
        data=json.dumps(EXAMPLE).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    if "predicted_clv" not in answer:
        sys.exit(f"unexpected answer: {answer}")
    return answer


# ---- the report --------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_api_"))
    try:
        if args.model_dir is None:
            print(f"training a model on a generated bank of {args.customers:,} customers in {tmp} ...", flush=True)
            model_dir = train_model(tmp, args.customers)
        else:
            model_dir = args.model_dir
        ports, processes = start_servers(tmp, model_dir)
        try:
            answer = check_answer(ports["api"][1])
            system = f"Python {platform.python_version()}, {os.cpu_count()} CPUs"
            print(f"api benchmark: {system}, model {answer['model_version']}")
            if args.baseline:
                checkout = args.baseline.resolve()
                print(f"baseline: api.py of {describe_checkout(checkout)}", flush=True)
                process, port, note = start_baseline(tmp, checkout, model_dir, args.customers, processes)
                ports["baseline"] = (process, port)
                order = "right after the current api" if args.rounds == 1 else f"in {args.rounds} turns with the api"
                print(f"  the baseline serves {note}, model {check_answer(port).get('model_version')}; it runs "
                      f"{order} at each level, under the same load")  # fmt: skip
            print(
                "every server: uvicorn, 1 worker, 127.0.0.1; the load generator is another process on the same "
                f"{os.cpu_count()} cores, so it competes with the server for CPU (figures are lower bounds)"
            )
            print(f"each level: {args.warmup:g} s warm-up, then {args.seconds:g} s or {args.max_requests:,} requests\n")
            rows = []
            for concurrency in args.concurrency:
                level = (concurrency, args.seconds, args.warmup, args.max_requests)
                reference = run_load(*ports["reference"], "/predict", *level)
                runs: dict[str, list[dict]] = {"api": [], "baseline": []}
                for turn in range(args.rounds if "baseline" in ports else 1):
                    for name in ("api", "baseline") if turn % 2 == 0 else ("baseline", "api"):  # ABBA: no order wins
                        if name in ports:
                            runs[name].append(run_load(*ports[name], "/predict/clv", *level))
                rows.append((concurrency, reference, runs["api"], runs["baseline"]))
                api = median(runs["api"], "rps")
                line = f"api {api:>7,.0f}/s  ratio {api / reference['rps']:.2f}"
                if runs["baseline"]:
                    ratios = ", ".join(f"{r:.2f}" for r in round_ratios(runs["api"], runs["baseline"]))
                    line += f"  baseline {median(runs['baseline'], 'rps'):>7,.0f}/s  api/baseline {ratios}"
                print(f"  concurrency {concurrency:>2}: reference {reference['rps']:>7,.0f}/s  {line}", flush=True)
        finally:
            stop_servers(processes)
        print_table(rows)
        print_targets(rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def round_ratios(apis: list[dict], baselines: list[dict]) -> list[float]:
    """The current api's throughput over the baseline's, round by round."""
    return [api["rps"] / baseline["rps"] for api, baseline in zip(apis, baselines, strict=True)]


def print_table(rows: list[tuple[int, dict, list[dict], list[dict]]]) -> None:
    w = 11 if any(len(apis) > 1 for _, _, apis, _ in rows) else 9  # "baseline #2"
    print()
    header = (
        f"  {'conc':>4}  {'server':<{w}} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} {'errors':>6}"
        f" {'server CPU ms/req':>18}"
    )
    print(header)
    for concurrency, reference, apis, baselines in rows:
        servers = [("reference", reference)]
        for turn, pair in enumerate(itertools.zip_longest(apis, baselines)):
            mark = f" #{turn + 1}" if len(apis) > 1 else ""
            servers += [(f"{name}{mark}", r) for name, r in zip(("api", "baseline"), pair, strict=True) if r]
        for name, r in servers:
            print(
                f"  {concurrency:>4}  {name:<{w}} {r['rps']:>8,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                f"{r['ok']:>9,} {r['errors']:>6} {r['cpu_ms']:>18.3f}"
                + (f"  {r['error_kinds']}" if r["errors"] else "")
            )
        api_rps, api_cpu = median(apis, "rps"), median(apis, "cpu_ms")
        cpu_ratio = reference["cpu_ms"] / api_cpu
        print(f"  {concurrency:>4}  {'ratio':<{w}} {api_rps / reference['rps']:>8.2f} {'':>37} {cpu_ratio:>18.2f}")
        if baselines:  # as above: the current api's req/s over the baseline's, the baseline's CPU over the api's
            rps_ratio = statistics.median(round_ratios(apis, baselines))
            cpu_ratio = median(baselines, "cpu_ms") / api_cpu
            print(f"  {concurrency:>4}  {'api/base':<{w}} {rps_ratio:>8.2f} {'':>37} {cpu_ratio:>18.2f}")


def print_targets(rows: list[tuple[int, dict, list[dict], list[dict]]]) -> None:
    by = {c: (reference, apis, baselines) for c, reference, apis, baselines in rows}
    targets = []
    if 8 in by:
        ratio = median(by[8][1], "rps") / by[8][0]["rps"]
        targets.append((f"concurrency 8: >= {TARGET_RATIO_AT_8:.0%} of the reference", f"{ratio:.1%}", ratio >= 0.3))
    if 8 in by and by[8][2]:
        ratio = statistics.median(round_ratios(by[8][1], by[8][2]))
        label = f"concurrency 8: >= {TARGET_VS_BASELINE:.0%} of the baseline's throughput"
        if len(by[8][2]) > 1:
            label += f" (median of {len(by[8][2])} rounds)"
        targets.append((label, f"{ratio:.1%}", ratio >= TARGET_VS_BASELINE))
    if 1 in by:
        p50 = median(by[1][1], "p50_ms")
        targets.append((f"concurrency 1: p50 < {TARGET_P50_AT_1_MS:g} ms", f"{p50:.2f} ms", p50 < TARGET_P50_AT_1_MS))
    if 32 in by:
        errors = sum(r["errors"] for r in by[32][1])
        targets.append(("concurrency 32: zero errors", f"{errors}", errors == 0))
    if not targets:
        return
    width = max(len(label) for label, _, _ in targets)
    print("\n  targets")
    for label, value, ok in targets:
        print(f"  {label:<{width}}  {value:>9}  {verdict(ok)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="a trained model folder (default: train one in a temp dir)")
    parser.add_argument("--customers", type=int, default=1000, help="customers of the generated bank (default 1000)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="levels (default 1 8 32)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each level (default 1)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="request bound per level (default 200000)")
    parser.add_argument(
        "--baseline", type=Path, metavar="DIR", help="another checkout whose api.py runs under the same load"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="with --baseline: runs of each per level, in turns (default 1)"
    )
    parser.add_argument("--stage", choices=["load"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: must be 1 or more")
    if args.baseline and not (args.baseline / "api.py").is_file():
        parser.error(f"--baseline {args.baseline}: no api.py there; another checkout of this repository, please")
    if args.stage == "load":
        args.concurrency = args.concurrency[0]
        load_stage(args)
    else:
        report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
