"""Throughput and latency of POST /predict/clv under uvicorn, against a trivial FastAPI POST endpoint.

Run `python bench/bench_api.py` (`--model-dir` to serve a trained model; without it a small bank is
generated and a model trained in a temporary folder). Both servers run as `uvicorn` with one worker on
127.0.0.1; the load comes from a separate process (bench/load.py: keep-alive HTTP/1.1 on asyncio and
uvloop), so that it does not share the server's GIL. Each concurrency level runs for a bounded time and
request count. Every request computes its prediction: the service has no response cache.

The headline is the api as it serves beyond loopback: an API key in its keys file (made by
`python api.py keys add`, scope clv:predict) and the metrics on. Every request carries the key in an
`Authorization: Bearer` header, the reference's too (which ignores it). Targets at concurrency 8: at least 50%
of the reference's throughput; at concurrency 32: p99 under 5 ms and no errors.

`--baseline DIR` also serves DIR's own api.py (another checkout of this repository, e.g. a git worktree of main),
started from DIR with the same settings and the same model when DIR can serve it (else on a model that DIR's own
`data_gen.py` and `model.py train` make), and puts it under the same load right after the current api at every
level; it prints both throughputs and their ratio (target: no drop of more than 5% at concurrency 8). A few per
cent is within the noise of one pair of runs on a shared machine: `--rounds N` runs N pairs per level in turns
(api then baseline, then baseline then api, ...) and judges the median ratio.

`--compare` puts variants of the current api under the same load in the same turns (all by default):
`metrics`, the api with CLV_METRICS=false, to price the instrumentation (/metrics, the request and prediction
series, the drift window; target: at most 10% of the throughput), `workers`, the api with CLV_WORKERS=2,
to print two workers' throughput against one, and `keys`, the api without keys (an empty keys file:
authentication off on loopback), to price authentication (target: keys on at least 90% of keys off). A
server without keys ignores the header. A baseline is served with the same keys file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from api_servers import (
    KEY,
    VARIANTS,
    check_answer,
    describe_checkout,
    make_key,
    start_baseline,
    start_servers,
    stop_servers,
)
from common import ROOT, train_model, verdict

TARGET_RATIO_AT_8 = 0.50  # the api, keys and metrics on, over the bare reference endpoint
TARGET_P50_AT_1_MS = 3.0
TARGET_P99_AT_32_MS = 5.0
TARGET_VS_BASELINE = 0.95  # the current api's throughput at concurrency 8 over the baseline's, in the same run
TARGET_METRICS_COST = 0.10  # the api with its metrics on over the same api with them off, at concurrency 8
TARGET_KEYS = 0.90  # the api with keys on over the same api with keys off, at concurrency 8


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its children, such as uvicorn's workers (Linux /proc),
    NaN where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = [
            int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()
        ]
    except OSError:
        return float("nan")
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return own + sum(cpu_seconds(child) for child in children)


def run_load(
    server: subprocess.Popen, port: int, path: str, concurrency: int, seconds: float, warmup: float, max_requests: int
) -> dict:
    """One level against one server (after an unmeasured warm-up run), and the server's CPU time per
    answered request, which hardly changes when other processes take CPU from this machine."""

    def load(duration: float) -> dict:
        command = [
            sys.executable,
            str(ROOT / "bench" / "load.py"),
            "--port",
            str(port),
            "--path",
            path,
            "--concurrency",
            str(concurrency),
            "--seconds",
            str(duration),
            "--max-requests",
            str(max_requests),
            *(["--header", f"Authorization: Bearer {KEY[0]}"] if KEY else []),
        ]
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


# ---- the report --------------------------------------------------------------------------------


def report(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_api_"))
    try:
        if args.model_dir is None:
            print(f"training a model on a generated bank of {args.customers:,} customers in {tmp} ...", flush=True)
            model_dir = train_model(tmp, args.customers)
        else:
            model_dir = args.model_dir
        KEY.append(make_key(tmp))
        ports, processes = start_servers(tmp, model_dir, args.compare)
        try:
            answer = check_answer(ports["api"][1])
            system = f"Python {platform.python_version()}, {os.cpu_count()} CPUs"
            print(f"api benchmark: {system}, model {answer['model_version']}; the api with an API key, metrics on")
            if args.baseline:
                checkout = args.baseline.resolve()
                print(f"baseline: api.py of {describe_checkout(checkout)}", flush=True)
                process, port, note = start_baseline(tmp, checkout, model_dir, args.customers, processes)
                ports["baseline"] = (process, port)
                print(f"  the baseline serves {note}, model {check_answer(port).get('model_version')}")
            for name, settings in (VARIANTS[v] for v in args.compare):
                print(f"{name}: the current api with {', '.join(f'{k}={v}' for k, v in settings.items())}")
            print(
                "every server: uvicorn, 1 worker unless named otherwise, 127.0.0.1; the load generator is another "
                f"process on the same {os.cpu_count()} cores, so it competes with the servers for CPU (figures are "
                "lower bounds)"
            )
            print(
                f"each level: {args.warmup:g} s warm-up, then {args.seconds:g} s or {args.max_requests:,} requests; "
                f"the reference, the api and the servers it is compared with run {args.rounds} time(s) in turns\n"
            )
            rows = [run_level(ports, concurrency, args) for concurrency in args.concurrency]
        finally:
            stop_servers(processes)
        print_table(rows)
        print_targets(rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


Runs = dict[str, list[dict]]  # a server's runs at one level, by its name
COMPARED = [  # (numerator, denominator, label): ratios of throughput printed at each level
    ("api", "reference", "api/reference"),
    ("api", "baseline", "api/baseline"),
    ("api", "metrics off", "metrics on/off"),
    ("2 workers", "api", "2 workers/1"),
    ("api", "keys off", "keys on/off"),
]


def run_level(ports: dict[str, tuple[subprocess.Popen, int]], concurrency: int, args: argparse.Namespace) -> tuple:
    """The reference, the api and the servers it is compared with in turns, the order reversed every other round
    (ABBA: no position wins): every ratio is the median of ratios measured under the same load, the reference's
    too, which matters on a machine shared with other work."""
    level = (concurrency, args.seconds, args.warmup, args.max_requests)
    runs: Runs = {}
    names = ["reference", *(name for name in ports if name != "reference")]
    for turn in range(args.rounds):
        for name in names if turn % 2 == 0 else names[::-1]:
            path = "/predict" if name == "reference" else "/predict/clv"
            runs.setdefault(name, []).append(run_load(*ports[name], path, *level))
    figures = "  ".join(f"{name} {median(r, 'rps'):,.0f}/s" for name, r in runs.items())
    ratios = "  ".join(f"{label} {ratio(runs, a, b):.2f}" for a, b, label in COMPARED if a in runs and b in runs)
    print(f"  concurrency {concurrency:>2}: {figures}\n{'':>17}{ratios}", flush=True)
    return concurrency, runs


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def ratio(runs: Runs, a: str, b: str) -> float:
    """a's throughput over b's: the median of the round-by-round ratios."""
    if len(runs[a]) == len(runs[b]):
        return statistics.median(x["rps"] / y["rps"] for x, y in zip(runs[a], runs[b], strict=True))
    return median(runs[a], "rps") / median(runs[b], "rps")


def print_table(rows: list[tuple[int, Runs]]) -> None:
    rounds = max(len(r) for _, runs in rows for r in runs.values())
    w = max(len(name) for _, runs in rows for name in runs) + (3 if rounds > 1 else 0)
    print(
        f"\n  {'conc':>4}  {'server':<{w}} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} {'errors':>6}"
        f" {'server CPU ms/req':>18}"
    )
    for concurrency, runs in rows:
        for name, server_runs in runs.items():
            for turn, r in enumerate(server_runs):
                mark = f" #{turn + 1}" if len(server_runs) > 1 else ""
                print(
                    f"  {concurrency:>4}  {name + mark:<{w}} {r['rps']:>8,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}"
                    f" {r['ok']:>9,} {r['errors']:>6} {r['cpu_ms']:>18.3f}"
                    + (f"  {r['error_kinds']}" if r["errors"] else "")
                )
        for a, b, label in COMPARED:  # req/s of a over b; CPU per request of b over a
            if a in runs and b in runs:
                cpu = median(runs[b], "cpu_ms") / median(runs[a], "cpu_ms")
                print(f"  {concurrency:>4}  {label:<{w}} {ratio(runs, a, b):>8.2f} {'':>37} {cpu:>18.2f}")


def print_targets(rows: list[tuple[int, Runs]]) -> None:
    by = dict(rows)
    targets = []
    if 8 in by:
        runs = by[8]
        api = ratio(runs, "api", "reference")
        label = f"concurrency 8: api (keys, metrics on) >= {TARGET_RATIO_AT_8:.0%} of the reference"
        targets.append((label, f"{api:.1%}", api >= TARGET_RATIO_AT_8))
        if "baseline" in runs:
            share = ratio(runs, "api", "baseline")
            label = f"concurrency 8: >= {TARGET_VS_BASELINE:.0%} of the baseline's throughput"
            targets.append((label, f"{share:.1%}", share >= TARGET_VS_BASELINE))
        if "metrics off" in runs:
            cost = 1 - ratio(runs, "api", "metrics off")
            label = f"concurrency 8: metrics cost <= {TARGET_METRICS_COST:.0%} of the throughput"
            targets.append((label, f"{cost:.1%}", cost <= TARGET_METRICS_COST))
        if "keys off" in runs:
            share = ratio(runs, "api", "keys off")
            label = f"concurrency 8: keys on >= {TARGET_KEYS:.0%} of keys off"
            targets.append((label, f"{share:.1%}", share >= TARGET_KEYS))
    if 1 in by:
        p50 = median(by[1]["api"], "p50_ms")
        targets.append((f"concurrency 1: p50 < {TARGET_P50_AT_1_MS:g} ms", f"{p50:.2f} ms", p50 < TARGET_P50_AT_1_MS))
    if 32 in by:
        p99 = median(by[32]["api"], "p99_ms")
        label = f"concurrency 32: api p99 < {TARGET_P99_AT_32_MS:g} ms"
        targets.append((label, f"{p99:.2f} ms", p99 < TARGET_P99_AT_32_MS))
        errors = sum(r["errors"] for name, runs in by[32].items() if name != "reference" for r in runs)
        targets.append(("concurrency 32: zero errors (every server)", f"{errors}", errors == 0))
    if targets:
        width = max(len(label) for label, _, _ in targets)
        print("\n  targets")
        for label, value, ok in targets:
            print(f"  {label:<{width}}  {value:>9}  {verdict(ok)}")
    workers = [(c, ratio(runs, "2 workers", "api")) for c, runs in rows if "2 workers" in runs]
    if workers:  # no target: two workers share the machine's cores with the load generator
        print("\n  CLV_WORKERS=2 over 1 worker, same run: " + ", ".join(f"{r:.2f}x at {c}" for c, r in workers))


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
        "--rounds", type=int, default=1, help="runs of the api and what it is compared with per level (default 1)"
    )
    parser.add_argument(
        "--compare",
        nargs="*",
        choices=sorted(VARIANTS),
        default=sorted(VARIANTS),
        help="variants of the api under the same load: metrics (CLV_METRICS=false), workers (CLV_WORKERS=2), "
        "keys (the api without keys); default all, none with a bare --compare",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: must be 1 or more")
    if args.baseline and not (args.baseline / "api.py").is_file():
        parser.error(f"--baseline {args.baseline}: no api.py there; another checkout of this repository, please")
    report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
