"""Where a part's scoring time goes: the real `clv.batch.scoring.score_part` run under cProfile on a few parts of a
partitioned bank, in one process on one thread as a Dask worker runs it (OMP_NUM_THREADS=1), its time split by the
functions each stage is made of.

    python bench/stages.py BANK MODEL_DIR [--parts 3]      prints the table, and its JSON on the last line

bench_scale.py runs it on each size's bank and prints the table.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before numpy and clv.model.trees are imported: a worker's one thread

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

from scale_report import TARGET_SCORE_RATE, TARGET_SCORE_WORKERS

# stage: the functions (file, name) whose cumulative time is the stage's; what none covers is "other"
STAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "verify": (("layout.py", "verify"),),
    "read": (("contract.py", "_read"),),
    "check": (("contract.py", "check_frame"), ("contract.py", "check_read")),
    "bank": (("bank.py", "bank_from_tables"),),
    "features": (("features.py", "build_features"), ("labels.py", "joined"), ("labels.py", "former")),
    "trees": (("trees.py", "evaluate"),),  # the walk adds each tree's path credits too
    "drivers": (("attributions.py", "driver_order"), ("attributions.py", "rescale")),
    "write": (("frame.py", "to_parquet"), ("frame.py", "to_csv")),
    "portfolio": (("portfolio.py", "segment_labels"), ("portfolio.py", "summarize")),
}


def stage_seconds(stats: pstats.Stats, total: float) -> dict[str, float]:
    """The cumulative seconds of each stage's functions, and the rest as "other"."""
    seconds = dict.fromkeys(STAGES, 0.0)
    for (filename, _, name), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        for stage, functions in STAGES.items():
            if any(filename.endswith(f"/{file}") and name == function for file, function in functions):
                seconds[stage] += cumulative
    seconds["other"] = max(0.0, total - sum(seconds.values()))
    return seconds


def profile(bank: Path, models: Path, parts: int) -> dict:
    from clv.batch.scoring import score_part
    from clv.common import dates
    from clv.data.layout import open_bank
    from clv.model import artifacts

    source, predictor = open_bank(bank), artifacts.load(models).predictor
    as_of = dates.from_day(source.last_day)
    chosen = source.parts[:parts]
    with tempfile.TemporaryDirectory(prefix="stages-") as folder:
        score_part(source, chosen[0], predictor, as_of, Path(folder), "parquet")  # warm: imports, first allocations
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for part in chosen:
            score_part(source, part, predictor, as_of, Path(folder), "parquet")
        profiler.disable()
        total = time.perf_counter() - started
    customers = source.customers_in(chosen)
    seconds = stage_seconds(pstats.Stats(profiler), total)
    return {"parts": len(chosen), "customers": customers, "seconds": total, "stages": seconds}


def table(result: dict) -> str:
    """The stages' share of a part's time, per part and per 25,000 customers."""
    per_part = result["seconds"] / result["parts"]
    rate = result["customers"] / result["seconds"]
    lines = [
        f"a part's scoring by stage ({result['parts']} parts of {result['customers'] // result['parts']:,} customers, "
        f"one thread, under cProfile: {per_part:.2f} s a part, {rate:,.0f} customers/s a core)",
        f"  {'stage':10s} {'s a part':>9s} {'share':>6s}",
    ]
    for stage, seconds in result["stages"].items():
        lines.append(f"  {stage:10s} {seconds / result['parts']:9.3f} {seconds / result['seconds']:6.0%}")
    # the floor of today's files and model: decoding the Parquet and walking the trees, which no other change shortens
    floor = (result["stages"]["read"] + result["stages"]["trees"]) / result["parts"]
    customers = result["customers"] / result["parts"]
    budget = TARGET_SCORE_WORKERS * customers / TARGET_SCORE_RATE
    most = f"at most {customers / floor:,.0f} customers/s a core" if floor else "not measured"
    lines.append(
        f"  reading the files and walking the trees alone: {floor:.2f} s a part, {most}; {TARGET_SCORE_RATE:,} "
        f"customers/s on {TARGET_SCORE_WORKERS} workers gives a part {budget:.2f} s"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bank", type=Path, help="a partitioned bank")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--parts", type=int, default=3, help="parts to profile after a first one to warm up")
    args = parser.parse_args()
    result = profile(args.bank, args.model_dir, args.parts)
    print(table(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
