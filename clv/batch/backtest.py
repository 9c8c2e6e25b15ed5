"""Backtest: the same training at several cutoffs, each judged on its held-out customers over the months after
it (docs/protocol.md#backtest), with the population's drift from one cutoff to the next.

A model whose Gini, coverage or churn calibration swings from cutoff to cutoff is not stable enough to run a
bank's campaigns on; this is what a model validation asks first.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from clv.batch.monitoring import monitored
from clv.common import dates
from clv.common.cluster import LocalRunner, Runner
from clv.common.io import atomic_path
from clv.data.contract import DataContractError
from clv.data.layout import Source, open_bank
from clv.model.card import HorizonMetrics
from clv.model.config import TrainingConfig
from clv.model.monitoring import Profile, drift
from clv.model.protocol import check_cutoff, data_start, default_cutoff
from clv.model.training import TrainResult, train

logger = logging.getLogger(__name__)

HISTORY_MONTHS = 15  # a cutoff needs a year of features and the quarter before it, which training also learns from
CLOCK_FEATURES = ("history_days", "tenure_months")  # count time since the data began: move with any cutoff
METRICS = ("normalized_gini", "spearman", "decile_mape", "total_error", "interval_coverage")
CHURN_METRICS = ("auc", "ece", "brier_skill")


def cutoffs_for(source: Source, horizon_months: int, every: int) -> list[dt.date]:
    """Month ends every `every` months back from the latest cutoff whose labels are complete, as far back as a
    year and a quarter of history allows; oldest first."""
    latest = default_cutoff(source.last_day, horizon_months)
    earliest = dates.add_months(data_start(source), HISTORY_MONTHS)
    cutoffs = []
    cutoff = latest
    while cutoff >= earliest:
        cutoffs.append(cutoff)
        cutoff = dates.add_months(cutoff, -every)
    return cutoffs[::-1]


def backtest(
    data_dir: Path,
    cutoffs: list[dt.date] | None = None,
    every: int = 6,
    config: TrainingConfig | None = None,
    runner: Runner | None = None,
) -> dict:
    """Train with `config` at every cutoff and judge each on its held-out customers: one row per cutoff (at the
    horizon trained for, with the population's PSI against the previous cutoff's training rows), and in it one row
    per longer horizon the data reaches. The cutoffs are `cutoffs`, by default every `every` months back from the
    latest whose labels are complete; `config.cutoff` is refused."""
    config = config or TrainingConfig()
    if config.cutoff is not None:
        raise ValueError(f"a backtest trains at its own cutoffs; pass {config.cutoff} in `cutoffs`, not in the config")
    source, runner = open_bank(data_dir), runner or LocalRunner()
    cutoffs = sorted(cutoffs) if cutoffs else cutoffs_for(source, config.label_months, every)
    for cutoff in cutoffs:
        check_cutoff(source, cutoff, config.label_months, option="--cutoffs")
    if not cutoffs:
        raise DataContractError(
            f"{data_dir}: no cutoff with {HISTORY_MONTHS} months of history before it and "
            f"{config.horizon_months} after it"
        )
    rows, previous = [], None
    for cutoff in cutoffs:
        logger.info("backtest: training at %s", cutoff)
        result = train(data_dir, replace(config, cutoff=cutoff), runner)
        rows.append(judged(result) | population_shift(source, runner, result.model, cutoff, previous, config.seed))
        previous = result.profile
    return {"horizon_months": config.horizon_months, "churn_months": config.churn_label_months, "cutoffs": rows}


def judged(result: TrainResult) -> dict:
    """A cutoff's row: its held-out metrics, the last-12 baseline's Gini beside them, and the churn metrics."""
    evaluation = result.evaluation
    model, last12 = evaluation.metrics.model, evaluation.metrics.baseline_last12
    churn = evaluation.churn.model if evaluation.churn else None
    return {
        "cutoff": result.cutoff.isoformat(),
        "horizon_months": result.config.horizon_months,
        "test_customers": evaluation.test_customers,
        **{name: getattr(model, name) for name in METRICS},
        "baseline_last12_gini": last12.normalized_gini,
        "churn_months": result.config.churn_label_months,
        **{f"churn_{name}": getattr(churn, name, None) for name in CHURN_METRICS},
        "horizons": [horizon_row(entry) for entry in result.horizons[1:] if entry.judged],
    }


def horizon_row(entry: HorizonMetrics) -> dict:
    """A longer horizon judged for a cutoff: where (the cutoff, or an earlier one the data reaches that far), its
    metrics, and the naive annuity's Gini and decile MAPE beside them."""
    model, annuity = entry.model, entry.baseline_annuity
    return {
        "months": entry.months,
        "judged_at": entry.cutoff.isoformat(),
        "test_customers": entry.customers,
        **{name: getattr(model, name) for name in METRICS},
        "annuity_gini": annuity.normalized_gini,
        "annuity_decile_mape": annuity.decile_mape,
    }


def population_shift(
    source: Source, runner: Runner, model, cutoff: dt.date, previous: Profile | None, seed: int
) -> dict:
    """PSI of the customers as of `cutoff` against the previous cutoff's training rows: the largest over the
    features (leaving out those that count time since the data began) and that of the prediction."""
    if previous is None:
        return {"psi_max": None, "psi_feature": None, "psi_prediction": None}
    X, predictions, _ = monitored(source, runner, model, cutoff, seed)
    report = drift(previous, X, predictions, tuple(model.ledger_features))
    name, value = next(((n, v) for n, v in report.worst() if n not in CLOCK_FEATURES), (None, None))
    return {"psi_max": value, "psi_feature": name, "psi_prediction": report.prediction}


def table(result: dict) -> str:
    """The backtest as text: one line per cutoff."""
    head = (
        f"{'cutoff':<11} {'customers':>9} {'gini':>6} {'spearman':>8} {'dec_mape':>8} {'total':>7} "
        f"{'cover':>6} {'last12':>6} {'c_auc':>6} {'c_ece':>6} {'c_skill':>7} {'psi_max':>7}  feature"
    )
    lines = [head]
    for row in result["cutoffs"]:

        def f(key: str, width: int, row: dict = row) -> str:
            value = row[key]
            return f"{value:>{width}.3f}" if isinstance(value, float) else f"{'-' if value is None else value:>{width}}"

        lines.append(
            f"{row['cutoff']:<11} {row['test_customers']:>9} {f('normalized_gini', 6)} {f('spearman', 8)} "
            f"{f('decile_mape', 8)} {f('total_error', 7)} {f('interval_coverage', 6)} "
            f"{f('baseline_last12_gini', 6)} {f('churn_auc', 6)} {f('churn_ece', 6)} "
            f"{f('churn_brier_skill', 7)} {f('psi_max', 7)}  {row['psi_feature'] or '-'}"
        )
        for h in row["horizons"]:
            lines.append(
                f"  {h['months']:>3d} mo at {h['judged_at']:<10} {h['test_customers']:>5} "
                f"{f('normalized_gini', 6, h)} {f('spearman', 8, h)} {f('decile_mape', 8, h)} "
                f"{f('total_error', 7, h)} {f('interval_coverage', 6, h)} annuity gini "
                f"{f('annuity_gini', 5, h)} mape {f('annuity_decile_mape', 5, h)}"
            )
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    """A PNG of the held-out Gini, coverage and churn AUC and ECE at each cutoff."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = result["cutoffs"]
    x = [row["cutoff"] for row in rows]
    figure = Figure(figsize=(10, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    value, churn = figure.subplots(1, 2)
    for key, label in (
        ("normalized_gini", "model Gini"),
        ("baseline_last12_gini", "last-12 Gini"),
        ("interval_coverage", "interval coverage"),
    ):
        value.plot(x, [np.nan if row[key] is None else row[key] for row in rows], marker="o", label=label)
    value.set_title(f"value over {result['horizon_months']} months, held out", fontsize=9)
    for key, label in (("churn_auc", "churn AUC"), ("churn_ece", "churn ECE")):
        churn.plot(x, [np.nan if row[key] is None else row[key] for row in rows], marker="o", label=label)
    churn.set_title(f"churn within {result['churn_months']} months, held out", fontsize=9)
    for ax in (value, churn):
        ax.tick_params(axis="x", rotation=40, labelsize=7)
        ax.legend(fontsize=7)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return Path(path)
