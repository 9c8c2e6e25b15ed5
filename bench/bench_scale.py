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
bench/results/bench_scale-*.json.
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
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow.parquet as pq
from common import ROOT, verdict
from processes import ROLES, Run, mb, run

from clv.batch.portfolio import Summary, portfolio, segment_labels, summarize
from clv.batch.scoring import score_bank
from clv.common import dates
from clv.data.bank import id_positions
from clv.data.layout import open_bank
from clv.model import artifacts
from clv.model.labels import joined

RESULTS = ROOT / "bench" / "results"
WORKERS = (1, 2)  # scoring runs with each; generation and training with the last
TARGET_MEMORY_RATIO = 1.25  # every process's peak at the largest size over its peak at the smallest
TARGET_WORKER_BYTES = 2e9
TARGET_SCORE_RATE = 20_000  # customers per second end to end, largest size, 2 workers
TARGET_SPEEDUP = 1.7  # 2 workers over 1, largest size
TARGET_GENERATE_RATE = 1_000_000  # transactions per second end to end, largest size
TARGET_TRAIN_S = 120.0
TARGET_GINI_GAP = 0.01
TARGET_VERIFY_SHARE = 0.05  # checking the part files, of scoring's CPU
TARGET_PORTFOLIO_SHARE = 0.10  # the portfolio's sums, of scoring's CPU
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
    """The time to map one part's transactions to its customers' rows when the ids are scattered (as in a part of
    a bank split by a hash of its own ids): a search for every row (rows in their stored order, as before) and the
    run-length pass (the same rows sorted by customer)."""
    source = open_bank(bank)
    paths = source.paths(source.parts[0])
    customers = pq.read_table(paths["customers"], columns=["customer_id"])["customer_id"].to_numpy() * SCATTER
    rows = pq.read_table(paths["transactions"], columns=["customer_id"])["customer_id"].to_numpy() * SCATTER
    position = id_positions(customers)
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


# ---- the report ---------------------------------------------------------------------------------------------


def plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'s' * (n != 1)}"


def commands(size: dict) -> list[tuple[str, Run]]:
    found = [("generate", size.get("generate"))]
    found += [(f"score, {plural(w, 'worker')}", run) for w, run in size.get("score", {}).items()]
    found.append(("train", size.get("train")))
    return [(name, run) for name, run in found if isinstance(run, Run) and run.ok]


def rate(size: dict, workers: int) -> float | None:
    done = size.get("score", {}).get(workers)
    return size["customers"] / done.seconds if done and done.ok else None


def inside_rate(done: Run | None) -> float | None:
    """Customers a second from the first part sent to the last one done, as the command's last progress line
    says: the rate without the interpreter's start, the imports and the cluster's start and stop."""
    found = re.findall(r"scored: \d+/\d+ parts, [\d,]+ customers, ([\d,]+)/s", done.log) if done and done.ok else []
    return float(found[-1].replace(",", "")) if found else None


def print_runs(figures: dict) -> None:
    print("\n== every command, end to end: interpreter start, imports, cluster start and stop included ==")
    print("  (CPU: of every process of the command; load: the machine's 1-minute load average as it started)\n")
    rows = list(iter_runs(figures))
    width = max(len(done.label) for done in rows)
    print(f"  {'command':<{width}}  {'wall s':>7} {'CPU s':>7} {'load':>5}")
    for done in rows:
        figure = done.figure if done.ok else f"FAILED (exit {done.returncode})"
        print(f"  {done.label:<{width}}  {done.seconds:>7.1f} {done.cpu_s:>7.1f} {done.load_before:>5.1f}  {figure}")
    print()
    for customers, size in figures["sizes"].items():
        one, two = rate(size, 1), rate(size, 2)
        if one and two:
            inside = [inside_rate(size["score"][w]) for w in (1, 2)]
            steady = f", {inside[1] / inside[0]:.2f}x from the first task to the last" if all(inside) else ""
            print(f"  {customers:,}: 2 workers score {two / one:.2f}x as fast as 1 end to end{steady}")
    print("\n== where the time goes: the commands' own log lines, seconds after each command started ==")
    largest = list(figures["sizes"].values())[-1:]
    shown = [size.get("train") for size in figures["sizes"].values()]
    shown += [done for size in largest for done in size.get("score", {}).values()]
    for done in shown:
        if done is None or not done.ok:
            continue
        print(f"  {done.label}:")
        for at, message in done.timeline:
            print(f"    {at:7.1f} s  {message[:110]}")
        print(f"    {done.seconds:7.1f} s  (exit)")


def print_memory(figures: dict) -> None:
    sizes = list(figures["sizes"].values())
    print("\n== peak resident memory of every process of each command (max RSS / VmHWM, sampled every 0.2 s) ==")
    for role, text in ROLES.items():
        print(f"  {role:<9} {text}")
    head = "".join(f"{size['customers']:>14,}" for size in sizes)
    print(f"\n  {'command':<20}{'process':<22}{head}{'ratio':>8}")
    names = list(dict.fromkeys(name for size in sizes for name, _ in commands(size)))
    for name in names:
        by_size = [dict(commands(size)).get(name) for size in sizes]
        roles = list(dict.fromkeys(role for done in by_size if done for role in done.roles()))
        for role in roles:
            counts = {done.count(role) for done in by_size if done}
            label = f"{role} (max of {max(counts)})" if max(counts) > 1 else role
            peaks = [done.peak(role) if done else 0 for done in by_size]
            cells = "".join(f"{mb(p) if p else '-':>14}" for p in peaks)
            ratio = f"{peaks[-1] / peaks[0]:.2f}" if len(peaks) > 1 and peaks[0] and peaks[-1] else ""
            print(f"  {name:<20}{label:<22}{cells}{ratio:>8}")
    for size in sizes:
        for name, done in commands(size):
            for role in ("scheduler", "nanny"):
                if done.count(role):
                    print(f"  note: {name} at {size['customers']:,} had a separate {role} process")
    if sizes and all(not done.count("scheduler") for size in sizes for _, done in commands(size)):
        print("  no separate scheduler process was seen: the LocalCluster's scheduler is part of the client's figure")


def memory_check(figures: dict) -> tuple[float | None, int | None]:
    """The worst ratio of a process's peak at the largest size to its peak at the smallest, over every
    command and kind of process; and the largest worker peak at any size."""
    sizes = list(figures["sizes"].values())
    if len(sizes) < 2:
        return None, None
    small, large = dict(commands(sizes[0])), dict(commands(sizes[-1]))
    ratios = [
        large[name].peak(role) / small[name].peak(role)
        for name in small.keys() & large.keys()
        for role in small[name].roles()
        if small[name].peak(role) and large[name].peak(role)
    ]
    workers = [done.peak("worker") for size in sizes for _, done in commands(size)]
    return (max(ratios) if ratios else None), (max(workers) if workers else None)


Target = tuple[str, str, bool | None]


def target(label: str, value: float | None, shown: str, met: Callable[[float], bool] | None) -> Target:
    """A target's line: the figure as `shown` formats it, and met, missed, or None when there is no figure
    (or when `met` is None: a figure printed beside the targets only)."""
    if value is None:
        return label, "-", None
    return label, shown.format(value), None if met is None else met(value)


def targets(figures: dict) -> list[Target]:
    sizes = list(figures["sizes"].values())
    if not sizes:
        return []
    small, large = sizes[0], sizes[-1]
    n, m = f"{large['customers']:,}", f"{small['customers']:,}"
    ratio, worker = memory_check(figures)
    rows = [
        target(
            f"memory flat: every process's peak at {n} <= {TARGET_MEMORY_RATIO}x its peak at {m}",
            ratio,
            "{:.2f}x",
            lambda r: r <= TARGET_MEMORY_RATIO,
        ),
        target(
            f"every worker's peak <= {TARGET_WORKER_BYTES / 1e9:g} GB",
            worker and worker / 2**20,
            "{:,.0f} MB",
            lambda w: w * 2**20 <= TARGET_WORKER_BYTES,
        ),
        target(
            f"score {n} with 2 workers >= {TARGET_SCORE_RATE:,} customers/s",
            rate(large, 2),
            "{:,.0f}/s",
            lambda r: r >= TARGET_SCORE_RATE,
        ),
    ]
    for size in reversed(sizes):
        one, two = rate(size, 1), rate(size, 2)
        label = f"score {size['customers']:,}: 2 workers >= {TARGET_SPEEDUP}x as fast as 1"
        met = (lambda s: s >= TARGET_SPEEDUP) if size is large else None
        rows.append(
            target(
                label if size is large else f"{label} (printed only)",
                two / one if one and two else None,
                "{:.2f}x",
                met,
            )
        )
    scored = large["score"].get(2)
    share = large["verify_s"] / scored.cpu_s if scored and scored.ok and "verify_s" in large else None
    rows.append(
        target(
            f"verify {n}'s part files (size, SHA-256) <= {TARGET_VERIFY_SHARE:.0%} of scoring's CPU",
            share,
            "{:.1%}",
            lambda s: s <= TARGET_VERIFY_SHARE,
        )
    )
    for size in sizes:
        scored = size["score"].get(2)
        share = size["portfolio_s"] / scored.cpu_s if scored and scored.ok and "portfolio_s" in size else None
        rows.append(
            target(
                f"the portfolio of {size['customers']:,} <= {TARGET_PORTFOLIO_SHARE:.0%} of scoring's CPU",
                share,
                "{:.1%}",
                lambda s: s <= TARGET_PORTFOLIO_SHARE,
            )
        )
    speedup = large["map_search_s"] / large["map_runs_s"] if large.get("map_runs_s") else None
    rows.append(
        target(
            "map a part's scattered ids to rows: run-length pass over searching every row (printed only)",
            speedup,
            "{:.1f}x",
            None,
        )
    )
    generate, train = large["generate"], large.get("train")
    gen_rate = large["transactions"] / generate.seconds if generate.ok else None
    gap = abs(large["gini"] - small["gini"]) if "gini" in large and "gini" in small and large is not small else None
    rows += [
        target(
            f"generate {n} >= {TARGET_GENERATE_RATE:,} transactions/s",
            gen_rate,
            "{:,.0f}/s",
            lambda r: r >= TARGET_GENERATE_RATE,
        ),
        target(
            f"train on {n} (2 workers) <= {TARGET_TRAIN_S:g} s",
            train.seconds if train and train.ok else None,
            "{:.1f} s",
            lambda s: s <= TARGET_TRAIN_S,
        ),
        target(
            f"held-out Gini at {n} within {TARGET_GINI_GAP} of the Gini at {m}",
            gap,
            "{:.4f}",
            lambda g: g <= TARGET_GINI_GAP,
        ),
    ]
    return rows


def print_targets(rows: list[Target], customers: list[int]) -> None:
    print("\n== targets ==")
    if customers != [100_000, 1_000_000]:
        print(f"  (the targets are set for 100,000 and 1,000,000 customers; these sizes are {customers})")
    width, value_width = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    for label, value, ok in rows:
        shown = "-" if ok is None and label.endswith("(printed only)") else verdict(ok)
        print(f"  {label:<{width}}  {value:>{value_width}}  {shown}")


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


def iter_runs(figures: dict) -> Iterator[Run]:
    for value in figures.values():
        if isinstance(value, Run):
            yield value
        elif isinstance(value, dict):
            yield from iter_runs(value)


if __name__ == "__main__":
    sys.exit(main())
