"""Benchmark: score a flat bank of 100,000 generated customers from its CSV files, as `model.py score` does, against
pyarrow alone reading the same four files, in one run; prints both, the stages and the peak memory.

Targets: within 2x of pyarrow's read, end to end (issue 27); at least 50,000 customers/s end to end (issue 6).

    python bench/bench_score.py [--customers 100000] [--bank DIR] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import pyarrow.csv as pa_csv
from common import peak_gb, verdict

from clv.batch import runs
from clv.batch.scoring import score_bank
from clv.common.cluster import LocalRunner
from clv.data.bank import bank_from_tables
from clv.data.contract import find_tables, read_bank
from clv.data.layout import open_bank
from clv.model import artifacts
from clv.model.training import train_and_save
from clv.synthetic import generator

TARGET = 50_000
TARGET_RATIO = 2.0


def pyarrow_read(bank: Path) -> float:
    """pyarrow's own CSV reader on the four files, with its defaults (types inferred, every core)."""
    started = time.perf_counter()
    for path in find_tables(bank).values():
        pa_csv.read_csv(path)
    return time.perf_counter() - started


def score_command(bank: Path, model_dir: Path, scores: Path) -> tuple[float, int]:
    """`model.py score --data-dir BANK --model-dir MODELS` in this process: the flat bank opened, read, checked,
    scored with the portfolio and written as a run of its own."""
    started = time.perf_counter()
    loaded = artifacts.load(model_dir)
    source = open_bank(bank)
    _, result = runs.score_run(source, LocalRunner(), loaded, None, bank, scores)
    return time.perf_counter() - started, result.customers


def stages(bank: Path, model_dir: Path) -> list[tuple[str, float]]:
    """The same work split in its stages (read and check, arrays, scoring)."""
    model = artifacts.load(model_dir).predictor
    started = time.perf_counter()
    tables = read_bank(bank)
    read = time.perf_counter()
    built = bank_from_tables(tables)
    arrays = time.perf_counter()
    score_bank(model, built)
    scored = time.perf_counter()
    return [
        ("read and check the files (data contract)", read - started),
        ("tables to arrays", arrays - read),
        ("features, prediction, interval, drivers", scored - arrays),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--bank", type=Path, help="a flat bank of CSV files (default: generate --customers)")
    parser.add_argument("--model-dir", type=Path, help="a trained model (default: train one on 10,000 customers)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir, bank = args.model_dir, args.bank
        if model_dir is None:
            print("training a model on the default bank (10,000 customers) ...", flush=True)
            generator.write_tables(generator.simulate(generator.Config()), work / "train")
            model_dir = work / "models"
            train_and_save(work / "train", model_dir)
        if bank is None:
            print(f"generating {args.customers:,} customers ...", flush=True)
            bank = work / "bank"
            generator.write_tables(generator.simulate(generator.Config(customers=args.customers, seed=7)), bank)
        for path in find_tables(bank).values():  # both readers start from the page cache
            path.read_bytes()
        raw = pyarrow_read(bank)
        total, n = score_command(bank, model_dir, work / "scores")
        split = stages(bank, model_dir)

    size = sum(path.stat().st_size for path in find_tables(bank).values()) if args.bank else None
    shown = "" if size is None else f", {size / 2**30:.2f} GB of CSV"
    print(f"\nscored {n:,} customers{shown}")
    print(f"  {'pyarrow reads the four CSV files':42s} {raw:7.2f} s")
    print(f"  {'model.py score, end to end':42s} {total:7.2f} s  -> {n / total:10,.0f} customers/s")
    print("  of which, measured again stage by stage:")
    for name, seconds in split:
        print(f"    {name:40s} {seconds:7.2f} s")
    print(f"  peak memory {peak_gb():.2f} GB")
    ratio, met = total / raw, verdict(total / raw <= TARGET_RATIO)
    print(f"end to end / pyarrow's read: {ratio:.2f}x (target at most {TARGET_RATIO:g}x): {met}")
    print(f"target >= {TARGET:,} customers/s end to end: {verdict(n / total >= TARGET)}")


if __name__ == "__main__":
    main()
