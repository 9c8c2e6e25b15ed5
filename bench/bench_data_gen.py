"""Speed and memory of the synthetic bank at scale, against plain pandas writing the same frames to CSV.

Run `python bench/bench_data_gen.py`. Every stage runs in a fresh child process, so that each peak
memory figure (`ru_maxrss`) belongs to that stage alone and no stage warms a cache for another.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, verdict

TARGET_RATE = 1_000_000  # transactions per second, end to end
TARGET_REFERENCE_RATIO = 3.0  # end-to-end time over the pandas to_csv time of the same frames
TARGET_PEAK_BYTES = 4e9
TARGET_DEFAULT_SECONDS = 10.0


def peak_bytes(who: int = resource.RUSAGE_SELF) -> int:
    return resource.getrusage(who).ru_maxrss * 1024  # Linux reports kilobytes


def stage_simulate(customers: int, seed: int) -> dict[str, float]:
    """Simulate only: how much memory the simulation itself needs."""
    from clv.synthetic import generator

    before = peak_bytes()
    started = time.perf_counter()
    tables = generator.simulate(generator.Config(customers=customers, seed=seed))
    return {
        "simulate_s": time.perf_counter() - started,
        "import_peak": before,
        "peak": peak_bytes(),
        "transactions": tables["transactions"].num_rows,
    }


def stage_generate(customers: int, seed: int) -> dict[str, float]:
    """Simulate and write, then the reference: pandas writing the same tables (only to_csv is timed)."""
    from clv.synthetic import generator

    with tempfile.TemporaryDirectory(prefix="bench_data_gen_") as tmp:
        out = Path(tmp) / "generated"
        started = time.perf_counter()
        tables = generator.simulate(generator.Config(customers=customers, seed=seed))
        simulated = time.perf_counter()
        paths = generator.write_tables(tables, out)
        written = time.perf_counter()
        figures = {
            "simulate_s": simulated - started,
            "write_s": written - simulated,
            "total_s": written - started,
            "peak": peak_bytes(),  # before the reference converts anything to pandas
            "transactions": tables["transactions"].num_rows,
            "rows": sum(table.num_rows for table in tables.values()),
            "bytes": sum(path.stat().st_size for path in paths),
        }
        shutil.rmtree(out)  # one copy on disk at a time; the reference writes the same amount

        reference = Path(tmp) / "reference"
        reference.mkdir()
        reference_s = 0.0
        for name in list(tables):
            frame = tables.pop(name).to_pandas()
            started = time.perf_counter()
            frame.to_csv(reference / f"{name}.csv", index=False)
            reference_s += time.perf_counter() - started
            del frame
        figures["reference_s"] = reference_s
        figures["reference_bytes"] = sum(path.stat().st_size for path in reference.iterdir())
    return figures


STAGES = {"simulate": stage_simulate, "generate": stage_generate}


def run_stage(stage: str, customers: int, seed: int) -> dict[str, float]:
    """Run one stage in a fresh interpreter and return the figures it reports."""
    command = [sys.executable, __file__, "--stage", stage, "--customers", str(customers), "--seed", str(seed)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"stage {stage} failed (exit {result.returncode}):\n{result.stderr}")
    return json.loads(result.stdout.splitlines()[-1])


def run_default_cli(customers: int, seed: int) -> tuple[float, int]:
    """Wall time of `python data_gen.py` at the default size, interpreter start-up included, and its peak."""
    with tempfile.TemporaryDirectory(prefix="bench_data_gen_cli_") as tmp:
        command = [sys.executable, "data_gen.py", "--customers", str(customers), "--seed", str(seed), "--out", tmp]
        started = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"data_gen.py failed (exit {result.returncode}):\n{result.stderr}")
    # the largest child so far; this runs before any other child, so it is this one
    return elapsed, peak_bytes(resource.RUSAGE_CHILDREN)


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def report(args: argparse.Namespace) -> None:
    print(f"data_gen benchmark: Python {platform.python_version()}, {os.cpu_count()} CPUs, seed {args.seed}")
    print("running: default-size CLI, simulate-only child, simulate+write+reference child ...", flush=True)
    default_s, default_peak = run_default_cli(args.default_customers, args.seed)
    sim = run_stage("simulate", args.customers, args.seed)
    gen = run_stage("generate", args.customers, args.seed)

    rate = gen["transactions"] / gen["total_s"]
    ratio = gen["total_s"] / gen["reference_s"]
    rows = [
        ("customers", f"{args.customers:,}"),
        ("transactions written", f"{gen['transactions']:,}"),
        ("rows written, all tables", f"{gen['rows']:,}"),
        ("CSV written", f"{gen['bytes'] / 1e6:,.0f} MB"),
        ("simulate", f"{gen['simulate_s']:.2f} s"),
        ("write_tables", f"{gen['write_s']:.2f} s"),
        ("total, end to end", f"{gen['total_s']:.2f} s"),
        ("transactions / s, end to end", f"{rate:,.0f}"),
        ("reference: pandas to_csv, same frames", f"{gen['reference_s']:.2f} s"),
        ("reference CSV written", f"{gen['reference_bytes'] / 1e6:,.0f} MB"),
        ("ratio generation / reference", f"{ratio:.2f}x"),
        ("peak memory, after imports", gb(sim["import_peak"])),
        ("peak memory, simulate only", f"{gb(sim['peak'])} ({sim['simulate_s']:.2f} s in its own run)"),
        ("peak memory, simulate + write", gb(gen["peak"])),
        (f"default size ({args.default_customers:,}), CLI wall", f"{default_s:.2f} s"),
        (f"default size ({args.default_customers:,}), CLI peak", gb(default_peak)),
    ]
    width = max(len(label) for label, _ in rows)
    print()
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")

    targets = [
        (f">= {TARGET_RATE:,} transactions/s end to end", f"{rate:,.0f}/s", rate >= TARGET_RATE),
        (f"total within {TARGET_REFERENCE_RATIO:g}x pandas to_csv", f"{ratio:.2f}x", ratio <= TARGET_REFERENCE_RATIO),
        (f"peak memory < {TARGET_PEAK_BYTES / 1e9:g} GB", gb(gen["peak"]), gen["peak"] < TARGET_PEAK_BYTES),
        (
            f"default size end to end < {TARGET_DEFAULT_SECONDS:g} s",
            f"{default_s:.2f} s",
            default_s < TARGET_DEFAULT_SECONDS,
        ),
    ]
    width = max(len(label) for label, _, _ in targets)
    value_width = max(len(value) for _, value, _ in targets)
    print("\n  targets")
    for label, value, ok in targets:
        print(f"  {label:<{width}}  {value:>{value_width}}  {verdict(ok)}")
    if sim["transactions"] != gen["transactions"]:
        print(f"\n  warning: the two runs of seed {args.seed} differ ({sim['transactions']:,} transactions)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000, help="customers of the large run (default 100000)")
    parser.add_argument("--default-customers", type=int, default=10_000, help="the CLI's default size (10000)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(STAGES[args.stage](args.customers, args.seed)))
    else:
        report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
