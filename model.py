"""Train, evaluate, list, promote and score CLV models: `python model.py COMMAND --help`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from clv.cli import (
    OneLineParser,
    OptionError,
    add_cluster_options,
    add_training_options,
    cutoff_list,
    data_location,
    location,
    parse_date,
    positive,
)
from clv.data.defaults import PARTITION_CUSTOMERS
from clv.model import signing
from clv.service.settings import Settings, SettingsError, load_settings


def add_folders(p: argparse.ArgumentParser, settings: Settings, data: bool = True) -> None:
    if data:
        p.add_argument(
            "--data-dir",
            type=location,
            default=settings.data_dir,
            help=f"the bank: a folder, or postgresql://USER@HOST[:PORT]/DB?schema=NAME (default {settings.data_dir})",
        )
    p.add_argument(
        "--model-dir", type=Path, default=settings.model_dir, help=f"models folder (default {settings.model_dir})"
    )


def add_train(sub: argparse._SubParsersAction, settings: Settings) -> None:
    p = sub.add_parser("train", help="train on a folder, evaluate on held-out customers, save a new version")
    add_folders(p, settings)
    p.add_argument("--cutoff", type=parse_date, help="as-of date of the features (default: last month end - horizon)")
    add_training_options(p)


def add_backtest(sub: argparse._SubParsersAction, settings: Settings) -> None:
    p = sub.add_parser("backtest", help="train at several cutoffs and judge each on the months after it")
    add_folders(p, settings)
    p.add_argument("--cutoffs", type=cutoff_list, help="D1,D2,...: the cutoffs (default: every --every months back)")
    p.add_argument(
        "--every",
        type=positive,
        default=6,
        help="months between cutoffs, back from the latest with complete labels (default 6)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("backtest"),
        help="folder for backtest.json and backtest.png (default backtest)",
    )
    p.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    add_training_options(p)


def add_evaluate(sub: argparse._SubParsersAction, settings: Settings) -> None:
    p = sub.add_parser("evaluate", help="held-out metrics of a saved model against the baselines")
    add_folders(p, settings)
    p.add_argument("--version", help="version to evaluate (default latest)")
    p.add_argument("--cutoff", type=parse_date, help="as-of date (default: the model's cutoff)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_cluster_options(p)


def add_bank_as_of(p: argparse.ArgumentParser, settings: Settings, verb: str) -> None:
    """The folders, the model version and the as-of date of a command that scores a bank's customers."""
    add_folders(p, settings)
    p.add_argument("--version", help=f"version to {verb} (default latest)")
    p.add_argument("--as-of", type=parse_date, help="as-of date (default: the last date in the data)")


def add_score(sub: argparse._SubParsersAction, settings: Settings) -> None:
    p = sub.add_parser("score", help="score every customer of a bank as of a date into a CSV or a Parquet dataset")
    add_bank_as_of(p, settings, "use")
    p.add_argument(
        "--output",
        type=location,
        help="X.csv: one CSV; X.parquet: a Parquet dataset, a file a partition; portfolio.json goes beside it; or "
        "postgresql://USER@HOST/DB?table=SCHEMA.NAME: a table whose rows are swapped in one transaction "
        "(default: a new run in --scores-dir)",
    )
    p.add_argument(
        "--portfolio-table",
        help="SCHEMA.NAME: with a postgresql:// --output, the run's portfolio as a row of this table there",
    )
    add_scores_dir(p, settings)
    p.add_argument(
        "--curve",
        type=Path,
        help="X.parquet: also the month-by-month curve (customer_id, month, survival, expected_margin, "
        "cumulative_clv) as a Parquet dataset, a file a partition",
    )
    add_cluster_options(p)


def add_scores_dir(p: argparse.ArgumentParser, settings: Settings) -> None:
    p.add_argument(
        "--scores-dir",
        type=Path,
        default=settings.scores_dir,
        help=f"the scoring runs' folder (default {settings.scores_dir}; CLV_SCORES_DIR)",
    )


def add_portfolio(sub: argparse._SubParsersAction, settings: Settings) -> None:
    p = sub.add_parser("portfolio", help="a scoring run's portfolio, or what changed between two runs")
    p.add_argument("--run", dest="run_name", help="the run: run_<timestamp>, its folder, or latest (default)")
    p.add_argument("--against", help="an earlier run to compare with: value by segment, deciles, the at-risk list")
    p.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    add_scores_dir(p, settings)


def add_report(sub: argparse._SubParsersAction, settings: Settings) -> None:
    p = sub.add_parser("report", help="one self-contained HTML file for the model's reviewers")
    p.add_argument("--out", type=Path, default=Path("report.html"), help="the HTML file (default report.html)")
    p.add_argument(
        "--model-dir", type=Path, default=settings.model_dir, help=f"model folder (default {settings.model_dir})"
    )
    p.add_argument("--version", help="the model (default: the scoring run's, else latest)")
    p.add_argument("--run", dest="run_name", help="the scoring run (default latest)")
    p.add_argument(
        "--backtest",
        type=Path,
        default=Path("backtest"),
        help="the folder of `model.py backtest --out` (default backtest); left out without one",
    )
    add_scores_dir(p, settings)
    add_cluster_options(p)


def add_monitor(sub: argparse._SubParsersAction, settings: Settings) -> None:
    p = sub.add_parser("monitor", help="input drift of a bank's customers against the model's training rows (PSI)")
    add_bank_as_of(p, settings, "compare with")
    p.add_argument(
        "--out", type=Path, default=Path("drift"), help="folder for drift.json and drift.png (default drift)"
    )
    p.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    add_cluster_options(p)


def add_prepare(sub: argparse._SubParsersAction, settings: Settings) -> None:
    p = sub.add_parser(
        "prepare",
        help="a flat folder of any size (Dask's shuffle, out of core), or a database's snapshot, as a partitioned bank",
    )
    p.add_argument(
        "src",
        type=location,
        help="the flat folder (the contract's CSV or Parquet files), or a postgresql:// bank (read from one snapshot)",
    )
    p.add_argument(
        "--out", type=location, required=True, help="the partitioned bank's folder (written whole, then renamed)"
    )
    p.add_argument(
        "--partitions", type=positive, help=f"partitions (default: one per {PARTITION_CUSTOMERS:,} customers)"
    )
    add_cluster_options(p)


def add_keygen(sub: argparse._SubParsersAction, settings: Settings) -> None:
    p = sub.add_parser("keygen", help="make an Ed25519 key pair to sign models with (never overwrites one)")
    p.add_argument(
        "--out", type=Path, required=True, help=f"folder for {signing.PRIVATE} (mode 0600) and {signing.PUBLIC}"
    )


def add_versions(sub: argparse._SubParsersAction, settings: Settings) -> None:
    p = sub.add_parser("list", help="saved versions with their headline metrics")
    add_folders(p, settings, data=False)
    p = sub.add_parser("promote", help="make an older version latest (rollback)")
    add_folders(p, settings, data=False)
    p.add_argument("version", help="version timestamp or folder name")


def parser(settings: Settings) -> argparse.ArgumentParser:
    top = OneLineParser(prog="model.py", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for add in (
        add_train,
        add_backtest,
        add_evaluate,
        add_score,
        add_portfolio,
        add_report,
        add_monitor,
        add_prepare,
        add_versions,
        add_keygen,
    ):
        add(sub, settings)
    return top


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"model.py: error: {exc}", file=sys.stderr)
        return 2
    args = parser(settings).parse_args(argv)
    args.settings = settings
    try:
        if getattr(args, "data_dir", None) is not None:
            args.data_dir = data_location(args.data_dir)
    except OptionError as exc:
        print(f"model.py {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "quiet", False):  # no progress, and no news: only warnings and the one-line error
        logging.getLogger().setLevel(logging.WARNING)
    from clv import commands  # once a command runs, not for its help or bad options; the model's libraries later

    try:
        commands.COMMANDS[args.command](args)
    except commands.ERRORS as exc:
        print(f"model.py {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
