"""The bodies of `python model.py COMMAND`, apart from its parsers: imported once a command runs, so that help
and a bad option answer without loading scikit-learn and Dask. A command that runs the model imports its modules
itself, after checking its options: list, portfolio, prepare and keygen start without scikit-learn (promote reads
the version it promotes as the service will, and so loads it)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from clv.batch import report, runs
from clv.batch.portfolio import Portfolio
from clv.cli import OptionError, data_location, runner_for, training_config
from clv.cli_tables import drift_table, report_text, versions_table
from clv.common.cluster import ClusterError, Runner
from clv.common.io import atomic_path, write_json
from clv.data.contract import DataContractError
from clv.data.defaults import PARTITION_CUSTOMERS
from clv.data.layout import Source, is_partitioned, open_bank, source_customers
from clv.data.location import LocationError, WarehouseURL
from clv.data.prepare import export, prepare
from clv.model import artifacts, signing
from clv.model.artifacts import ModelArtifactError
from clv.model.monitoring import plot_drift

logger = logging.getLogger(__name__)

# what a command may raise that model.py reports as one line with exit code 2
ERRORS = (OptionError, DataContractError, LocationError, ModelArtifactError, ClusterError)


@contextlib.contextmanager
def cluster_for(args: argparse.Namespace) -> Iterator[Runner]:
    """Dask for a bank of more than one part, or when a cluster is named; this process for a bank of one part (a
    flat folder, a database of up to one part's customers): a cluster would have nothing to share out. The bank
    stays open meanwhile, so that a database's steps read the one snapshot opened here."""
    source = open_bank(args.data_dir)
    with runner_for(args, args.settings, cluster=len(source.parts) > 1) as run:
        yield run


def bank_and_model(args: argparse.Namespace) -> tuple[Source, artifacts.LoadedModel]:
    """The bank and the model of score and monitor, refused in the cheapest order: a version that is not there, then
    a bank that cannot be opened (before the model's libraries load), then a version that does not verify."""
    path = artifacts.resolve(args.model_dir, args.version)
    source = open_bank(args.data_dir)
    return source, artifacts.load_folder(path, args.settings.model_verify_key)


def load_model(args: argparse.Namespace, version: str | None) -> artifacts.LoadedModel:
    """A version of --model-dir, refused unless signed by CLV_MODEL_VERIFY_KEY's pair when that is set."""
    return artifacts.load(args.model_dir, version, args.settings.model_verify_key)


def cmd_train(args: argparse.Namespace) -> None:
    config = training_config(args)
    artifacts.read_signing_key(args.settings.model_signing_key)  # a bad key is refused now, not after training
    from clv.model.training import train_and_save

    with cluster_for(args) as run:
        path, meta = train_and_save(args.data_dir, args.model_dir, config, run, args.settings.model_signing_key)
    print(f"model {meta.version} saved to {path} (cutoff {meta.cutoff}, {meta.seconds} s)")
    print(report_text(meta.model_dump(mode="json"), as_json=False))


def cmd_evaluate(args: argparse.Namespace) -> None:
    loaded = load_model(args, args.version)
    from clv.model.evaluation import evaluate_saved

    with cluster_for(args) as run:
        result = evaluate_saved(loaded.model, loaded.metadata, args.data_dir, args.cutoff, run)
    if not args.json:
        print(f"model {loaded.version} on {args.data_dir} as of {result['cutoff']} ({result['evaluated_on']})")
    print(report_text(result, args.json))


def cmd_score(args: argparse.Namespace) -> None:
    source, loaded = bank_and_model(args)
    from clv.model.predictor import NoCurve

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
    from clv.batch.monitoring import monitor

    data_dir = Path(result.data_dir)
    try:
        source = open_bank(data_dir)
        with runner_for(args, args.settings, cluster=len(source.parts) > 1) as run:
            drift, _ = monitor(source, run, loaded, result.as_of)
    except DataContractError as exc:
        return report.drift_section(None, f"The run's bank {data_dir} cannot be read now: {exc}")
    return report.drift_section(drift)


def cmd_monitor(args: argparse.Namespace) -> None:
    source, loaded = bank_and_model(args)
    from clv.batch.monitoring import monitor

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
    from clv.batch import backtest

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


def cmd_keygen(args: argparse.Namespace) -> None:
    try:
        private, public = signing.keygen(args.out)
    except signing.KeyFileError as exc:
        raise OptionError(f"--out: {exc}") from None
    print(f"written: {private} (secret; CLV_MODEL_SIGNING_KEY of training) and {public} (CLV_MODEL_VERIFY_KEY)")


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "train": cmd_train,
    "backtest": cmd_backtest,
    "evaluate": cmd_evaluate,
    "score": cmd_score,
    "portfolio": cmd_portfolio,
    "report": cmd_report,
    "monitor": cmd_monitor,
    "prepare": cmd_prepare,
    "list": cmd_list,
    "promote": cmd_promote,
    "keygen": cmd_keygen,
}
