"""The synthetic bank's command line: `python data_gen.py --help`.

A bank whose customers' future margin follows hidden traits that their past only partly shows
(clv.synthetic.simulation), written as the four tables of the data contract (clv.synthetic.generator): flat
CSV or Parquet files, or with `--partitions` a partitioned Parquet bank generated part by part on Dask. `--write-oracle`
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

from clv.cli import OneLineParser, OptionError, add_cluster_options, location, parse_date, runner_for
from clv.common import dates
from clv.common.cluster import ClusterError
from clv.data.contract import DataContractError
from clv.data.location import WarehouseURL
from clv.data.schema import TABLES
from clv.service.settings import Settings, SettingsError, load_settings
from clv.synthetic import warehouse
from clv.synthetic.generator import Config, Plan, generate, simulate, write_tables

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
    parser.add_argument(
        "--out",
        type=location,
        default=Path("data"),
        help="output folder (default data), or postgresql://USER@HOST[:PORT]/DB?schema=NAME: the four tables made "
        "anew there",
    )
    parser.add_argument("--write-oracle", action="store_true", help="also write oracle_clv (for evaluation)")
    parser.add_argument("--format", choices=("csv", "parquet"), help="file format (default csv; parquet partitioned)")
    parser.add_argument("--partitions", type=int, help="a partitioned Parquet bank of this many partitions")
    add_cluster_options(parser)
    return parser.parse_args(argv)


def check(args: argparse.Namespace) -> None:
    """One-line errors for options that cannot work together."""
    if args.customers < 1:
        raise OptionError(f"--customers {args.customers}: must be at least 1")
    if args.end_date < args.start_date + dt.timedelta(days=60):
        raise OptionError(f"--end-date {args.end_date}: must be two months or more after --start-date")
    if args.end_date > dt.date.today():
        raise OptionError(f"--end-date {args.end_date}: is in the future; a bank's data ends today at the latest")
    if args.write_oracle and args.end_date < dates.shift_months(args.start_date, 13):
        raise OptionError("--write-oracle: needs 13 months or more between --start-date and --end-date")
    if args.partitions is not None:
        if not 1 <= args.partitions <= args.customers:
            raise OptionError(f"--partitions {args.partitions}: must be between 1 and --customers")
        if args.format == "csv":
            raise OptionError("--partitions: a partitioned bank is written as Parquet; use --format parquet")
    if isinstance(args.out, WarehouseURL):
        if args.format is not None or args.write_oracle:
            option = "--format" if args.format is not None else "--write-oracle"
            raise OptionError(f"{option}: goes with a folder; --out {args.out} is a database")
        return
    check_writable(args.out)


def to_warehouse(args: argparse.Namespace, settings: Settings, config: Config, started: float) -> int:
    """The bank into PostgreSQL: whole in one transaction, or part by part on the cluster with --partitions."""
    try:
        if args.partitions is None:
            tables = simulate(config)
            warehouse.write_bank(args.out, tables)
            rows = {name: tables[name].num_rows for name in TABLES}
        else:
            with runner_for(args, settings) as run:
                rows = warehouse.generate_into(Plan(config, args.partitions), args.out, run)
    except (DataContractError, ClusterError) as exc:
        print(f"data_gen.py: error: {exc}", file=sys.stderr)
        return 2
    logger.info("done in %.1f s: %s", time.perf_counter() - started, ", ".join(f"{n} {c:,}" for n, c in rows.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        settings = load_settings()
        args = parse_args(argv)
        if args.quiet:  # no progress, and no news: only warnings and the one-line error
            logging.getLogger().setLevel(logging.WARNING)
        check(args)
    except (OptionError, SettingsError) as exc:
        print(f"data_gen.py: error: {exc}", file=sys.stderr)
        return 2
    config = Config(args.customers, args.start_date, args.end_date, args.seed, args.write_oracle)
    started = time.perf_counter()
    if isinstance(args.out, WarehouseURL):
        return to_warehouse(args, settings, config, started)
    if args.partitions is None:
        tables = simulate(config)
        paths = write_tables(tables, args.out, args.format or "csv", config)
        rows = ", ".join(f"{p.name} {tables[p.stem].num_rows:,}" for p in paths)
    else:
        try:
            with runner_for(args, settings) as run:
                manifest = generate(Plan(config, args.partitions), args.out, run)
        except ClusterError as exc:
            print(f"data_gen.py: error: {exc}", file=sys.stderr)
            return 2
        rows = ", ".join(f"{name} {count:,}" for name, count in manifest.tables.items())
    logger.info("done in %.1f s: %s", time.perf_counter() - started, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
