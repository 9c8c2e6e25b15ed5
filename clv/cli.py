"""What the command-line entry points share: one-line errors with exit code 2, date options, and where
part-by-part work runs."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from contextlib import AbstractContextManager
from typing import NoReturn

from clv.common.cluster import Runner, runner
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


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """Where part-by-part work runs, and whether it says how far it has got."""
    parser.add_argument("--workers", type=positive, help="Dask workers of a local cluster (default: one a core)")
    parser.add_argument("--scheduler", help="tcp://HOST:8786 of an existing Dask cluster (or CLV_DASK_SCHEDULER)")
    parser.add_argument("--memory-limit", help="memory of each local worker, e.g. 2GiB (default: an equal share)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def runner_for(args: argparse.Namespace, settings: Settings, cluster: bool = True) -> AbstractContextManager[Runner]:
    """The runner the cluster options ask for: the cluster at --scheduler (or CLV_DASK_SCHEDULER), else a local
    one; this process when `cluster` is False and no option asks for one."""
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
