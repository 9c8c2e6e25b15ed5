"""Benchmark: score 100,000 generated customers from their files; prints customers per second and peak memory.

Target (issue 6): at least 50,000 customers per second end to end. Run: python bench/bench_score.py
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from common import peak_gb, verdict

from clv.batch.scoring import score_bank
from clv.common.io import atomic_path
from clv.data.bank import bank_from_tables
from clv.data.contract import read_bank
from clv.model import artifacts
from clv.model.training import train_and_save
from clv.synthetic import generator

TARGET = 50_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--model-dir", type=Path, help="a trained model (default: train one on 10,000 customers)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = args.model_dir
        if model_dir is None:
            print("training a model on the default bank (10,000 customers) ...", flush=True)
            generator.write_tables(generator.simulate(generator.Config()), work / "train")
            model_dir = work / "models"
            train_and_save(work / "train", model_dir)
        print(f"generating {args.customers:,} customers ...", flush=True)
        generator.write_tables(generator.simulate(generator.Config(customers=args.customers, seed=7)), work / "bank")
        model = artifacts.load(model_dir).predictor

        started = time.perf_counter()
        tables = read_bank(work / "bank")
        read = time.perf_counter()
        bank = bank_from_tables(tables)
        built = time.perf_counter()
        scores = score_bank(model, bank)
        scored = time.perf_counter()
        with atomic_path(work / "predictions.csv") as out:
            scores.to_csv(out, index=False)
        written = time.perf_counter()

    n = len(scores)
    rows = [
        ("read and check the files (data contract)", read - started),
        ("tables to arrays", built - read),
        ("features, prediction, interval, drivers", scored - built),
        ("write predictions.csv", written - scored),
    ]
    print(f"\nscored {n:,} customers ({len(tables['transactions']):,} transactions)")
    for name, seconds in rows:
        print(f"  {name:42s} {seconds:7.2f} s")
    total = written - started
    compute = written - read
    print(f"  {'end to end':42s} {total:7.2f} s  -> {n / total:10,.0f} customers/s")
    print(f"  {'after reading the files':42s} {compute:7.2f} s  -> {n / compute:10,.0f} customers/s")
    print(f"  peak memory {peak_gb():.2f} GB")
    print(f"target >= {TARGET:,} customers/s end to end: {verdict(n / total >= TARGET)}")


if __name__ == "__main__":
    main()
