"""Scale of a partitioned bank on Dask: generate, score with 1 and 2 workers and train at two sizes, with the peak
memory of every process of every command.

Run `python bench/bench_scale.py` (100,000 and 1,000,000 customers: many minutes on 2 cores; `--customers
20000,60000` checks the benchmark itself in a minute or two). Every figure is the real command line (`data_gen.py`,
`model.py`) run as a fresh process tree: its wall time includes the interpreter's start, the imports and the local
cluster's start and stop. While it runs, a sampler walks the tree every 0.2 s and keeps each process's peak resident
memory (the larger of the sampled RSS and the kernel's high-water mark, VmHWM). A LocalCluster runs its scheduler
and its nannies inside the command's own process (the client) and each worker as a child process; the output says
which process each figure covers. Each size's bank also gets bench/stages.py's table: where a part's scoring time
goes, stage by stage (read, check, features, trees, drivers, write, portfolio). Everything goes to a temporary
folder, removed at the end (`--keep DIR` keeps the banks and models there); the figures also go to
bench/results/bench_scale-*.json. This file measures; bench/scale_report.py prints the tables and the targets.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow.parquet as pq
from common import ROOT
from processes import Run, run
from scale_report import inside_rate, iter_runs, plural, print_memory, print_runs, print_targets, targets

from clv.batch.portfolio import Summary, portfolio, segment_labels, summarize
from clv.batch.scoring import score_bank
from clv.common import dates
from clv.data.bank import id_positions
from clv.data.layout import open_bank
from clv.model import artifacts
from clv.model.labels import joined

RESULTS = ROOT / "bench" / "results"
WORKERS = (1, 2)  # scoring runs with each; generation and training with the last
PORTFOLIO_PARTS = 4  # parts the portfolio's cost is measured on, scaled to the bank
SCATTER = 1_000_003  # spreads a part's customer ids far apart: no lookup table over their range


# ---- the stages ---------------------------------------------------------------------------------------------


def partitions_for(customers: int, per_partition: int) -> int:
    return max(1, math.ceil(customers / per_partition))


def latest_metadata(model_dir: Path) -> dict:
    return json.loads((model_dir / artifacts.LATEST / "metadata.json").read_text())


def scored_rows(output: Path) -> int:
    return sum(pq.ParquetFile(path).metadata.num_rows for path in sorted(output.glob("*.parquet")))


def verify_seconds(bank: Path) -> float:
    """The time to check every part file against the manifest (size and SHA-256), in this one process: what the
    workers pay for it in all, on files in the page cache as scoring reads them."""
    source = open_bank(bank)
    started = time.process_time()
    for part in source.parts:
        source.verify(part, source.paths(part))
    return time.process_time() - started


def portfolio_seconds(bank: Path, models: Path) -> float:
    """The CPU the portfolio adds to scoring the whole bank, in this one process: each part's segments and sums
    (measured on the first PORTFOLIO_PARTS parts and scaled to all), their merge, and the final portfolio."""
    source, loaded = open_bank(bank), artifacts.load(models)
    horizons = loaded.predictor.horizons
    as_of = dates.from_day(source.last_day)
    day = dates.to_day(as_of)
    measured, summaries = 0.0, []
    parts = source.parts[:PORTFOLIO_PARTS]
    for part in parts:
        one = source.load(part)[0]
        frame = score_bank(loaded.predictor, one, as_of)
        started = time.process_time()
        labels = segment_labels(one, day, np.flatnonzero(joined(one, day)))
        summaries.append(summarize(frame, labels, horizons, loaded.model.interval_level))
        measured += time.process_time() - started
    started = time.process_time()
    total = Summary()
    for summary in summaries * math.ceil(len(source.parts) / len(parts)):
        total = total.merge(summary)
    portfolio(total, loaded.metadata, horizons, "bench", as_of, str(bank), source.fingerprint)
    return measured * len(source.parts) / len(parts) + time.process_time() - started


def part_stages(bank: Path, models: Path) -> dict | None:
    """bench/stages.py on the bank: where a part's scoring time goes, stage by stage; its table printed."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "stages.py"), str(bank), str(models)], capture_output=True, text=True
    )
    if done.returncode != 0:
        print(f"  stages: failed\n{done.stderr[-2000:]}")
        return None
    *shown, figures = done.stdout.strip().splitlines()
    print("\n".join(f"  {line}" for line in shown))
    return json.loads(figures)


def mapping_seconds(bank: Path) -> tuple[float, float]:
    """The time to map one part's transactions to its customers' rows when the ids lie too far apart for a lookup
    table over their range (SCATTER; a part's own ids, spread over the bank's range, get the table), by the hash
    table: the rows in their stored order, and the same rows sorted by customer (which once took a run-length pass
    of their own)."""
    source = open_bank(bank)
    paths = source.paths(source.parts[0])
    customers = pq.read_table(paths["customers"], columns=["customer_id"])["customer_id"].to_numpy() * SCATTER
    rows = pq.read_table(paths["transactions"], columns=["customer_id"])["customer_id"].to_numpy() * SCATTER
    position = id_positions(customers, rows.size)
    seconds = []
    for values in (rows, np.sort(rows, kind="stable")):
        started = time.process_time()
        found = position(pd.Series(values))
        seconds.append(time.process_time() - started)
        assert (customers[found] == values).all()
    return seconds[0], seconds[1]


def measure_size(customers: int, per_partition: int, store: Path, work: Path, models: Path | None) -> dict:
    """Generate a partitioned bank, score it with each count of workers (with the default bank's model, when
    there is one), and train on it."""
    logs, many = store / "logs", max(WORKERS)
    partitions = partitions_for(customers, per_partition)
    size: dict = {"customers": customers, "partitions": partitions, "per_partition": customers / partitions}
    print(f"\n{customers:,} customers in {plural(partitions, 'partition')} of about {customers // partitions:,}")
    bank = store / f"bank-{customers}"
    options = ["--customers", customers, "--partitions", partitions, "--workers", many, "--out", bank]
    generate = size["generate"] = run(f"generate {customers:,}", ["data_gen.py", *options], logs)
    if not generate.ok:
        return size
    transactions = size["transactions"] = json.loads((bank / "manifest.json").read_text())["tables"]["transactions"]
    inside = re.search(r"done in ([\d.]+) s", generate.log)
    generate.figure = f"{transactions / generate.seconds:,.0f} transactions/s ({transactions:,} transactions" + (
        f"; {inside.group(1)} s inside the command)" if inside else ")"
    )
    size["verify_s"] = verify_seconds(bank)
    if models:
        size["portfolio_s"] = portfolio_seconds(bank, models)
        print(f"  the portfolio's sums: {size['portfolio_s']:.2f} s of CPU for the whole bank")
        size["stages"] = part_stages(bank, models)
    size["map_search_s"], size["map_runs_s"] = mapping_seconds(bank)
    print(
        f"  map one part's ids to rows, ids scattered: {size['map_search_s'] * 1e3:,.1f} ms searching every row, "
        f"{size['map_runs_s'] * 1e3:,.1f} ms by runs of customer-sorted rows"
    )
    size["score"] = {}
    for workers in WORKERS if models else ():
        output = work / f"scores-{customers}-{workers}.parquet"
        options = ["--data-dir", bank, "--model-dir", models, "--output", output, "--workers", workers]
        done = size["score"][workers] = run(
            f"score {customers:,} with {plural(workers, 'worker')}", ["model.py", "score", *options], logs
        )
        if done.ok:
            done.figure = f"{customers / done.seconds:,.0f} customers/s ({scored_rows(output):,} rows written"
            if inside_rate(done):
                done.figure += f"; {inside_rate(done):,.0f}/s from the first task to the last"
            done.figure += ")"
        shutil.rmtree(output, ignore_errors=True)
    trained_dir = store / f"models-{customers}"
    options = ["--data-dir", bank, "--model-dir", trained_dir, "--workers", many]
    train = size["train"] = run(f"train on {customers:,}", ["model.py", "train", *options], logs)
    if train.ok:
        meta = latest_metadata(trained_dir)
        size["gini"], size["test_customers"] = meta["metrics"]["model"]["normalized_gini"], meta["test_customers"]
        drawn = re.search(r"rows of (\d+) customers", train.log)
        size["learners"] = int(drawn.group(1)) if drawn else None
        mape, naive = (meta["metrics"][name]["decile_mape"] for name in ("model", "baseline_last12"))
        train.figure = (
            f"learned from {size['learners'] or 0:,} customers; held-out Gini {size['gini']:.4f}, decile MAPE "
            f"{mape:.3f} (last-12 {naive:.3f}) on {size['test_customers']:,} customers; "
            f"train() alone {meta['seconds']} s"
        )
    if store == work:  # one bank on disk at a time
        shutil.rmtree(bank, ignore_errors=True)
    return size


def measure(args: argparse.Namespace, work: Path, store: Path) -> dict:
    logs = store / "logs"
    logs.mkdir(exist_ok=True)
    figures: dict = {"default": {}, "sizes": {}}
    print("default bank (10,000 customers, flat CSV) and the model that scores the partitioned banks", flush=True)
    default, models = store / "bank-default", store / "models-default"
    generated = run("generate the default bank", ["data_gen.py", "--out", default], logs)
    figures["default"]["generate"] = generated
    if generated.ok:
        trained = run(
            "train on the default bank", ["model.py", "train", "--data-dir", default, "--model-dir", models], logs
        )
        trained.figure = "flat folder: no cluster"
        figures["default"]["train"] = trained
    scorer = models if figures["default"].get("train") and figures["default"]["train"].ok else None
    for customers in args.customers:
        figures["sizes"][customers] = measure_size(customers, args.partition_customers, store, work, scorer)
    return figures


def as_json(value: object) -> object:
    if isinstance(value, Run):
        return asdict(value) | {"log": value.log[-2000:]}
    if isinstance(value, dict):
        return {str(k): as_json(v) for k, v in value.items()}
    return value


def save(figures: dict, rows: list, args: argparse.Namespace) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"bench_scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    document = {
        "benchmark": "bench_scale",
        "started": figures["started"],
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "memory": memory_bytes()},
        "options": {"customers": args.customers, "partition_customers": args.partition_customers},
        "figures": as_json({k: v for k, v in figures.items() if k != "started"}),
        "targets": [{"target": label, "value": value, "met": ok} for label, value, ok in rows],
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


def memory_bytes() -> int:
    return psutil.virtual_memory().total


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # a SIGTERM cleans up as Ctrl-C does


def customer_counts(text: str) -> list[int]:
    try:
        values = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of whole numbers such as 100000,1000000") from None
    if not values or min(values) < 100:
        raise argparse.ArgumentTypeError(f"'{text}': give sizes of 100 customers or more")
    return sorted(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--customers",
        type=customer_counts,
        default=[100_000, 1_000_000],
        help="sizes of the partitioned banks, smallest first (default 100000,1000000)",
    )
    parser.add_argument(
        "--partition-customers",
        type=int,
        default=25_000,
        help="customers a partition, the same at every size (default 25000)",
    )
    parser.add_argument("--keep", type=Path, help="write the banks and the models into DIR and keep them")
    args = parser.parse_args()
    if args.partition_customers < 1:
        parser.error(f"--partition-customers {args.partition_customers}: must be 1 or more")
    signal.signal(signal.SIGTERM, interrupted)
    # Ctrl-C as usual, also where a shell started this in the background with SIGINT ignored: the commands it
    # starts would inherit that, and could not be interrupted either.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    system = f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {memory_bytes() / 2**30:.0f} GiB"
    print(f"scale benchmark: {system}; load average {os.getloadavg()[0]:.2f} at the start (others' work shows here)\n")
    work = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    store = args.keep.resolve() if args.keep else work
    store.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    try:
        figures = measure(args, work, store)
    except KeyboardInterrupt:
        print("\ninterrupted; removing the temporary folder", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures["started"] = started
    print_runs(figures)
    print_memory(figures)
    rows = targets(figures)
    if rows:
        print_targets(rows, args.customers)
    print(f"\nfigures written to {save(figures, rows, args).relative_to(ROOT)}")
    if args.keep:
        print(f"banks and models kept in {store}")
    failed = [done.label for done in iter_runs(figures) if not done.ok]
    if failed:
        print(f"failed commands: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
