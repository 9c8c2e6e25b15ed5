"""What the command-line entry points share: one-line errors with exit code 2, date options, where part-by-part
work runs, and the training options of `train` and `backtest` with the one TrainingConfig made of them."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from contextlib import AbstractContextManager
from typing import NoReturn

from clv.common.cluster import Runner, runner
from clv.data.defaults import CHURN_MONTHS, DISCOUNT_RATE, HORIZON_MONTHS, HORIZONS, MAX_HORIZON
from clv.data.location import Location, LocationError, WarehouseURL, parse_location
from clv.model.config import MAX_TRAIN_CUSTOMERS, TRAIN_CUSTOMERS_FLOOR, TrainingConfig, TrainingConfigError
from clv.service.settings import Settings


class OptionError(Exception):
    """A bad command-line option: reported as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date (YYYY-MM-DD)") from None


def location(text: str) -> Location:
    """--data-dir, --output, --out: a folder or a postgresql:// URL; another scheme is refused, not made a folder."""
    try:
        return parse_location(text)
    except LocationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def data_location(value: Location | str, option: str = "--data-dir") -> Location:
    """The bank's location, its default (a setting) included: a folder that exists, or a URL; else refused naming
    the option."""
    try:
        found = parse_location(value)
    except LocationError as exc:
        raise OptionError(f"{option}: {exc}") from None
    if isinstance(found, WarehouseURL):
        return found
    if not found.is_dir():
        raise OptionError(f"{option} {found}: no such folder")
    return found


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """Where part-by-part work runs, and whether it says how far it has got."""
    parser.add_argument("--workers", type=positive, help="Dask workers of a local cluster (default: one a core)")
    parser.add_argument("--scheduler", help="tcp://HOST:8786 of an existing Dask cluster (or CLV_DASK_SCHEDULER)")
    parser.add_argument(
        "--memory-limit",
        type=memory_size,
        help="memory of each local worker: 2GiB, or 0.5 for half this machine's (default: an equal share)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def runner_for(args: argparse.Namespace, settings: Settings, cluster: bool = True) -> AbstractContextManager[Runner]:
    """The runner the cluster options ask for: the cluster at --scheduler (or CLV_DASK_SCHEDULER), else a local
    one; this process when `cluster` is False and no scheduler is named."""
    scheduler = args.scheduler or settings.dask_scheduler
    return runner(scheduler, args.workers, args.memory_limit, args.quiet, cluster=cluster)


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be 1 or more")
    return value


def memory_size(text: str) -> str:
    """--memory-limit: what Dask's workers read (2GiB, 800MB, 0.5 for half this machine's memory, 0 for no limit,
    auto), read by Dask's own rule; passed on as written."""
    from distributed.worker_memory import parse_memory_limit  # Dask only when the flag is given

    try:
        limit = parse_memory_limit(text, 1, total_cores=1, logger=logging.getLogger(__name__))
        if limit is not None and limit < 1:  # None: no limit (0); Dask passes a negative number on as it is
            raise ValueError(text)
    except (ValueError, TypeError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"'{text}' is neither a size such as 2GiB nor a share of memory such as 0.5"
        ) from None
    return text


def horizon_list(text: str) -> tuple[int, ...]:
    """--horizons: months, each 1 to MAX_HORIZON."""
    try:
        months = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of months such as 12,36,60") from None
    if not months or min(months) < 1 or max(months) > MAX_HORIZON:
        raise argparse.ArgumentTypeError(f"{text!r}: each horizon must be 1 to {MAX_HORIZON} months")
    return months


def cutoff_list(text: str) -> list[dt.date]:
    """--cutoffs: dates, comma-separated."""
    return [parse_date(part.strip()) for part in text.split(",") if part.strip()]


def add_training_options(p: argparse.ArgumentParser) -> None:
    """The options `train` and `backtest` share (training_config makes them one TrainingConfig), and the cluster's."""
    p.add_argument(
        "--horizon-months", type=int, default=HORIZON_MONTHS, help=f"months of future value (default {HORIZON_MONTHS})"
    )
    p.add_argument(
        "--discount-rate", type=float, default=DISCOUNT_RATE, help=f"annual discount rate (default {DISCOUNT_RATE})"
    )
    p.add_argument(
        "--churn-months",
        type=int,
        help=f"the churn probability is of leaving within these months (default: --horizon-months, {CHURN_MONTHS})",
    )
    p.add_argument(
        "--horizons",
        type=horizon_list,
        default=HORIZONS,
        help=f"M1,M2,...: the months of value predictions carry beside --horizon-months, each judged where the data "
        f"reaches and extrapolated past it (default {','.join(map(str, HORIZONS))})",
    )
    p.add_argument(
        "--max-train-customers",
        type=int,
        help=f"training customers to learn from at most, drawn from every part (default: 2 percent of the bank, "
        f"at least {TRAIN_CUSTOMERS_FLOOR:,} and at most {MAX_TRAIN_CUSTOMERS:,})",
    )
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    add_cluster_options(p)


def training_config(args: argparse.Namespace) -> TrainingConfig:
    """The one TrainingConfig of `train` or `backtest`, from their options; one out of range named as its flag."""
    try:
        return TrainingConfig(
            cutoff=getattr(args, "cutoff", None),
            horizon_months=args.horizon_months,
            churn_months=args.churn_months,
            discount_rate=args.discount_rate,
            horizons=args.horizons,
            max_train_customers=args.max_train_customers,
            seed=args.seed,
        )
    except TrainingConfigError as exc:
        raise OptionError(f"--{exc.option.replace('_', '-')} {exc.value}: {exc.rule}") from None
