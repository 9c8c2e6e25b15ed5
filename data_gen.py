"""The synthetic bank's command line: `python data_gen.py --help`.

A bank whose customers' future margin follows hidden traits that their past only partly shows
(clv.simulation), written as the four tables of the data contract (clv.generator). `--write-oracle`
also writes each customer's expected 12-month value as of the last month end minus 12 months,
estimated by simulating that future many times.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import time
from pathlib import Path

from clv import dates
from clv.cli import OneLineParser, OptionError, parse_date
from clv.generator import Config, simulate, write_tables

logger = logging.getLogger("data_gen")


def check_writable(out: Path) -> None:
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise OptionError(f"--out {out}: folder is not writable")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(prog="data_gen.py", description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=Config.customers, help="number of customers (default 10000)")
    parser.add_argument("--start-date", type=parse_date, default=Config.start, help="first day, YYYY-MM-DD")
    parser.add_argument("--end-date", type=parse_date, default=Config.end, help="last day, YYYY-MM-DD")
    parser.add_argument("--seed", type=int, default=Config.seed, help="random seed (default 42)")
    parser.add_argument("--out", type=Path, default=Path("data"), help="output folder (default data)")
    parser.add_argument("--write-oracle", action="store_true", help="also write oracle_clv.csv (for evaluation)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        args = parse_args(argv)
        if args.customers < 1:
            raise OptionError(f"--customers {args.customers}: must be at least 1")
        if args.end_date < args.start_date + dt.timedelta(days=60):
            raise OptionError(f"--end-date {args.end_date}: must be two months or more after --start-date")
        if args.write_oracle and args.end_date < dates.shift_months(args.start_date, 13):
            raise OptionError("--write-oracle: needs 13 months or more between --start-date and --end-date")
        check_writable(args.out)
    except OptionError as exc:
        print(f"data_gen.py: error: {exc}", file=sys.stderr)
        return 2
    config = Config(args.customers, args.start_date, args.end_date, args.seed, args.write_oracle)
    started = time.perf_counter()
    tables = simulate(config)
    paths = write_tables(tables, args.out)
    rows = ", ".join(f"{p.name} {tables[p.stem].num_rows:,}" for p in paths)
    logger.info("done in %.1f s: %s", time.perf_counter() - started, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
