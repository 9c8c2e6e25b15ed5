"""Train, evaluate, list, promote and score CLV models: `python model.py COMMAND --help`."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from clv.batch import backtest, report, runs
from clv.batch.monitoring import monitor
from clv.batch.portfolio import Portfolio
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
    runner_for,
    training_config,
)
from clv.cli_tables import drift_table, report_text, versions_table
from clv.common.cluster import ClusterError, Runner
from clv.common.io import atomic_path, write_json
from clv.data.contract import DataContractError
from clv.data.layout import PARTITION_CUSTOMERS, is_partitioned, open_bank, source_customers
from clv.data.location import LocationError, WarehouseURL
from clv.data.prepare import export, prepare
from clv.model import artifacts, signing
from clv.model.artifacts import ModelArtifactError
from clv.model.evaluation import evaluate_saved
from clv.model.monitoring import plot_drift
from clv.model.predictor import NoCurve
from clv.model.training import train_and_save
from clv.service.settings import Settings, SettingsError, load_settings

logger = logging.getLogger("model")


@contextlib.contextmanager
def cluster_for(args: argparse.Namespace) -> Iterator[Runner]:
    """Dask for a bank of more than one part, or when a cluster is named; this process for a bank of one part (a
    flat folder, a database of up to one part's customers): a cluster would have nothing to share out. The bank
    stays open meanwhile, so that a database's steps read the one snapshot opened here."""
    source = open_bank(args.data_dir)
    with runner_for(args, args.settings, cluster=len(source.parts) > 1) as run:
        yield run


def load_model(args: argparse.Namespace, version: str | None) -> artifacts.LoadedModel:
    """A version of --model-dir, refused unless signed by CLV_MODEL_VERIFY_KEY's pair when that is set."""
    return artifacts.load(args.model_dir, version, args.settings.model_verify_key)


def cmd_train(args: argparse.Namespace) -> None:
    config = training_config(args)
    artifacts.read_signing_key(args.settings.model_signing_key)  # a bad key is refused now, not after training
    with cluster_for(args) as run:
        path, meta = train_and_save(args.data_dir, args.model_dir, config, run, args.settings.model_signing_key)
    print(f"model {meta.version} saved to {path} (cutoff {meta.cutoff}, {meta.seconds} s)")
    print(report_text(meta.model_dump(mode="json"), as_json=False))


def cmd_evaluate(args: argparse.Namespace) -> None:
    loaded = load_model(args, args.version)
    with cluster_for(args) as run:
        result = evaluate_saved(loaded.model, loaded.metadata, args.data_dir, args.cutoff, run)
    if not args.json:
        print(f"model {loaded.version} on {args.data_dir} as of {result['cutoff']} ({result['evaluated_on']})")
    print(report_text(result, args.json))


def cmd_score(args: argparse.Namespace) -> None:
    loaded = load_model(args, args.version)
    source = open_bank(args.data_dir)
    with cluster_for(args) as run:
        try:
            path, result = runs.score_run(
                source,
                run,
                loaded,
                args.as_of,
                args.data_dir,
                args.scores_dir,
                args.output,
                args.curve,
                args.portfolio_table,
            )
        except NoCurve as exc:  # a model before horizons has no curve
            raise OptionError(f"--curve: {exc}") from None
    logger.info(
        "scored %d customers with model %s into %s; portfolio.json beside", result.customers, loaded.version, path
    )


def cmd_portfolio(args: argparse.Namespace) -> None:
    run = runs.run_folder(args.scores_dir, args.run_name)
    if args.against is None:
        result = runs.read_portfolio(run).model_dump(mode="json")
        print(json.dumps(result, indent=2) if args.json else runs.portfolio_table(result))
        return
    result = runs.compare(run, runs.run_folder(args.scores_dir, args.against))
    print(json.dumps(result, indent=2, default=str) if args.json else runs.table(result))


def cmd_report(args: argparse.Namespace) -> None:
    """The reviewers' HTML: the model of the latest scoring run (or --version), its backtest and the run."""
    try:
        result = runs.read_portfolio(runs.run_folder(args.scores_dir, args.run_name))
    except DataContractError as exc:
        if args.run_name is not None:
            raise
        result, why = None, f"No scoring run to measure ({exc})."
    loaded = load_model(args, args.version or (result.model_version if result else None))
    drift = report.drift_section(None, why) if result is None else run_drift(args, loaded, result)
    with atomic_path(args.out) as tmp:
        tmp.write_text(report.render(loaded.metadata, args.backtest, drift, result))
    print(f"written: {args.out} (model {loaded.version}{f', run {result.run}' if result else ''})")


def run_drift(args: argparse.Namespace, loaded: artifacts.LoadedModel, result: Portfolio) -> str:
    """The drift section of a run: its bank's customers as of its date against the model's training rows."""
    data_dir = Path(result.data_dir)
    try:
        source = open_bank(data_dir)
        with runner_for(args, args.settings, cluster=len(source.parts) > 1) as run:
            drift, _ = monitor(source, run, loaded, result.as_of)
    except DataContractError as exc:
        return report.drift_section(None, f"The run's bank {data_dir} cannot be read now: {exc}")
    return report.drift_section(drift)


def cmd_monitor(args: argparse.Namespace) -> None:
    loaded = load_model(args, args.version)
    source = open_bank(args.data_dir)
    with cluster_for(args) as run:
        report, X = monitor(source, run, loaded, args.as_of)
    args.out.mkdir(parents=True, exist_ok=True)
    document = report.to_json() | {"model_version": loaded.version, "data_dir": str(args.data_dir)}
    write_json(document, args.out / "drift.json")
    plot_drift(loaded.profile, X, report, args.out / "drift.png")
    if args.json:
        print(json.dumps(document))
        return
    print(
        f"input drift of {report.rows:,} customers of {args.data_dir} against model {loaded.version}'s "
        f"{report.reference_rows:,} training rows (population stability index)"
    )
    print(drift_table(report))
    print(f"written: {args.out / 'drift.json'}, {args.out / 'drift.png'}")


def cmd_backtest(args: argparse.Namespace) -> None:
    config = training_config(args)
    with cluster_for(args) as run:
        result = backtest.backtest(args.data_dir, args.cutoffs, args.every, config, run)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(result, args.out / "backtest.json")
    backtest.plot(result, args.out / "backtest.png")
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"backtest of {args.data_dir}: {len(result['cutoffs'])} cutoffs, value over {result['horizon_months']} "
        f"months and churn within {result['churn_months']}, each judged on its held-out customers"
    )
    print(backtest.table(result))
    print(f"written: {args.out / 'backtest.json'}, {args.out / 'backtest.png'}")


def cmd_prepare(args: argparse.Namespace) -> None:
    if isinstance(args.out, WarehouseURL):
        raise OptionError(f"--out {args.out}: prepare writes a folder (data_gen.py --out writes a database)")
    if isinstance(args.src, WarehouseURL):  # its snapshot as files: checked once, read again without the database
        if args.partitions:
            raise OptionError(
                f"--partitions {args.partitions}: a database's bank is written in the ranges of customers it is "
                "read in (the URL's part_customers sets their size)"
            )
        source = open_bank(args.src)
        with runner_for(args, args.settings, cluster=len(source.parts) > 1) as run:
            manifest = export(source, args.out, run)
    else:
        args.src = data_location(args.src, "src")
        if is_partitioned(args.src):
            raise OptionError(f"{args.src}: is partitioned already")
        partitions = args.partitions or max(1, -(-source_customers(args.src) // PARTITION_CUSTOMERS))
        with runner_for(args, args.settings) as run:
            manifest = prepare(args.src, args.out, partitions, run)
    print(
        f"{args.out}: {manifest.partitions} partitions, " + ", ".join(f"{n} {c:,}" for n, c in manifest.tables.items())
    )


def cmd_list(args: argparse.Namespace) -> None:
    rows = artifacts.versions(args.model_dir)
    if not rows:
        raise ModelArtifactError(f"no model in {args.model_dir}; run `python model.py train`")
    print(versions_table(rows))


def cmd_promote(args: argparse.Namespace) -> None:
    settings = args.settings
    path = artifacts.promote(args.model_dir, args.version, settings.model_signing_key, settings.model_verify_key)
    print(f"{path.name} is now latest")


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
    p.set_defaults(run=cmd_train)


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
    p.set_defaults(run=cmd_backtest)


def add_evaluate(sub: argparse._SubParsersAction, settings: Settings) -> None:
    p = sub.add_parser("evaluate", help="held-out metrics of a saved model against the baselines")
    add_folders(p, settings)
    p.add_argument("--version", help="version to evaluate (default latest)")
    p.add_argument("--cutoff", type=parse_date, help="as-of date (default: the model's cutoff)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_cluster_options(p)
    p.set_defaults(run=cmd_evaluate)


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
    p.set_defaults(run=cmd_score)


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
    p.set_defaults(run=cmd_portfolio)


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
    p.set_defaults(run=cmd_report)


def add_monitor(sub: argparse._SubParsersAction, settings: Settings) -> None:
    p = sub.add_parser("monitor", help="input drift of a bank's customers against the model's training rows (PSI)")
    add_bank_as_of(p, settings, "compare with")
    p.add_argument(
        "--out", type=Path, default=Path("drift"), help="folder for drift.json and drift.png (default drift)"
    )
    p.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    add_cluster_options(p)
    p.set_defaults(run=cmd_monitor)


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
    p.set_defaults(run=cmd_prepare)


def cmd_keygen(args: argparse.Namespace) -> None:
    try:
        private, public = signing.keygen(args.out)
    except signing.KeyFileError as exc:
        raise OptionError(f"--out: {exc}") from None
    print(f"written: {private} (secret; CLV_MODEL_SIGNING_KEY of training) and {public} (CLV_MODEL_VERIFY_KEY)")


def add_keygen(sub: argparse._SubParsersAction, settings: Settings) -> None:
    p = sub.add_parser("keygen", help="make an Ed25519 key pair to sign models with (never overwrites one)")
    p.add_argument(
        "--out", type=Path, required=True, help=f"folder for {signing.PRIVATE} (mode 0600) and {signing.PUBLIC}"
    )
    p.set_defaults(run=cmd_keygen)


def add_versions(sub: argparse._SubParsersAction, settings: Settings) -> None:
    p = sub.add_parser("list", help="saved versions with their headline metrics")
    add_folders(p, settings, data=False)
    p.set_defaults(run=cmd_list)
    p = sub.add_parser("promote", help="make an older version latest (rollback)")
    add_folders(p, settings, data=False)
    p.add_argument("version", help="version timestamp or folder name")
    p.set_defaults(run=cmd_promote)


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
    try:
        args.run(args)
    except (OptionError, DataContractError, LocationError, ModelArtifactError, ClusterError) as exc:
        print(f"model.py {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
