"""Held-out judging (docs/metrics.md): the held-out customers' rows scored into the few columns the metrics need
(`held_out_frame`: by training, on the rows its one read of each part gave; by `judge`, where each part lives, for
`model.py evaluate`); the model, the baselines and (when known) the oracle are judged on them into a typed
`Evaluation`."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance

from clv.common import dates
from clv.common.cluster import LocalRunner, Runner
from clv.data.bank import Bank
from clv.data.defaults import CHURN_MONTHS
from clv.data.layout import Oracle, Source, open_bank
from clv.model import metrics
from clv.model.card import ChurnMetrics, Evaluation, Importance, ModelMetadata
from clv.model.estimator import BankingCLVModel
from clv.model.protocol import Rows, judged, judged_share, rows_at

IMPORTANCE_ROWS = 2_000  # held-out rows permutation importance shuffles


def last12_baseline(X: pd.DataFrame, horizon_months: int, discount_rate: float) -> np.ndarray:
    """The last 12 months' value repeated (ledger margin, or positive inflows without a ledger), discounted."""
    monthly = X["margin_12m"].fillna(X["inflow_365d"]).to_numpy() / 12
    return np.nan_to_num(monthly) * dates.discount_factors(horizon_months, discount_rate).sum()


def held_out_rows(
    bank: Bank, oracle: Oracle | None, cutoff: dt.date, horizon_months: int, discount_rate: float, churn_months: int
) -> tuple[Rows, dict[str, np.ndarray]]:
    """The rows of a bank's customers at the cutoff (held out: the caller picks them), and the oracle's columns of
    them when the oracle is of that cutoff: its expected value (`oracle`, and `oracle_36m`, ... for the other
    horizons) and churn probability."""
    rows = rows_at(bank, [cutoff], horizon_months, discount_rate, churn_months)
    expected, oracle_churn = np.full(rows.y.size, np.nan), np.full(rows.y.size, np.nan)
    longer = {}  # the oracle's expected value of other horizons, as oracle_36m, ...
    if oracle is not None and oracle.as_of == cutoff:
        expected = oracle.expected_clv.reindex(rows.customer_id).to_numpy(np.float64)
        longer = {
            f"oracle_{months}m": values.reindex(rows.customer_id).to_numpy(np.float64)
            for months, values in oracle.horizons.items()
        }
        # the generator's oracle gives the probability of leaving within the default CHURN_MONTHS only
        if oracle.churn_probability is not None and churn_months == CHURN_MONTHS:
            oracle_churn = oracle.churn_probability.reindex(rows.customer_id).to_numpy(np.float64)
    return rows, {"oracle": expected, "oracle_churn_probability": oracle_churn, **longer}


def held_out_frame(
    model: BankingCLVModel, rows: Rows, oracle: dict[str, np.ndarray], horizon_months: int, discount_rate: float
) -> pd.DataFrame:
    """The held-out rows' columns the metrics need: the labels, the model's answer with and without the ledger, the
    last-12 baseline and the oracle's columns."""
    out = model.predict_all(rows.X, contributions=False)
    blind = model.predict_all(model.without_ledger(rows.X), contributions=False)
    return pd.DataFrame(
        {
            "customer_id": rows.customer_id,
            "actual": rows.y,
            "predicted": out["point"],
            "low": out["low"],
            "high": out["high"],
            "blind_predicted": blind["point"],
            "blind_low": blind["low"],
            "blind_high": blind["high"],
            "last12": last12_baseline(rows.X, horizon_months, discount_rate),
            "oracle": oracle["oracle"],
            "churned": rows.churned,
            "churn_probability": out["churn"],
            "blind_churn_probability": blind["churn"],
            "oracle_churn_probability": oracle["oracle_churn_probability"],
            **{name: values for name, values in oracle.items() if name not in ("oracle", "oracle_churn_probability")},
        }
    )


def importance_rows(rows: Rows, seed: int | None, sample: int) -> Rows:
    """A part's seeded sample of `sample` held-out rows, for permutation importance."""
    pick = np.random.default_rng(seed).permutation(rows.y.size)[:sample]
    return rows.take(np.sort(pick))


def importance_share(parts: int, importance: bool = True) -> int:
    """The held-out rows each part gives permutation importance: its share of them, twice it (for parts with fewer
    held-out customers than their share), so that the client's memory stays the same whatever the number of parts."""
    return min(IMPORTANCE_ROWS, math.ceil(2 * IMPORTANCE_ROWS / parts)) if importance else 0


def in_order(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The parts' frames as one, by customer: one order whatever the layout, so that metrics that break ties by order
    (a constant baseline) give one answer."""
    return pd.concat(frames, ignore_index=True).sort_values("customer_id", kind="stable", ignore_index=True)


def held_out_scores(
    source: Source,
    part: str,
    model: BankingCLVModel,
    cutoff: dt.date,
    horizon_months: int,
    discount_rate: float,
    seed: int | None,
    sample: int = IMPORTANCE_ROWS,
    churn_months: int = CHURN_MONTHS,
    share: float = 1.0,
) -> tuple[pd.DataFrame, Rows]:
    """A part's held-out customers judged at the cutoff (`share` of them, by the hash; every customer when `seed` is
    None) as the columns of `held_out_frame`, and a seeded sample of their rows, for permutation importance."""
    # only theirs are built (every customer's when seed is None)
    bank, oracle = source.load(part, keep=None if seed is None else lambda ids: judged(ids, seed, share))
    rows, columns = held_out_rows(bank, oracle, cutoff, horizon_months, discount_rate, churn_months)
    return held_out_frame(model, rows, columns, horizon_months, discount_rate), importance_rows(rows, seed, sample)


def judge(
    source: Source,
    runner: Runner,
    model: BankingCLVModel,
    cutoff: dt.date,
    horizon: int,
    rate: float,
    seed: int | None,
    importance: bool = True,
    churn_months: int = CHURN_MONTHS,
) -> tuple[pd.DataFrame, Rows]:
    """Every part's held-out customers judged (as many as training judges: `judged_share`) scored where the part
    lives; only their columns come back, and, for the `importance`, a sample of their rows."""
    results = runner.map(
        held_out_scores,
        source,
        label="held-out customers",
        model=runner.share(model),
        cutoff=cutoff,
        horizon_months=horizon,
        discount_rate=rate,
        seed=seed,
        sample=importance_share(len(source.parts), importance),
        churn_months=churn_months,
        share=judged_share(source.customers_in(source.parts)),
    )
    return in_order([scores for scores, _ in results]), Rows.concat([sample for _, sample in results])


def evaluate(scores: pd.DataFrame, train_mean: float) -> Evaluation:
    """Held-out metrics of the model, the baselines and (when known) the oracle, under one stable shape; a metric
    that cannot be computed is None."""
    y = scores["actual"].to_numpy()
    model = metrics.report(y, scores["predicted"], scores["low"], scores["high"])
    result = {
        "model": model,
        "model_without_ledger": metrics.report(y, scores["blind_predicted"], scores["blind_low"], scores["blind_high"]),
        "baseline_last12": metrics.report(y, scores["last12"]),
        "baseline_mean": metrics.report(y, np.full(y.size, train_mean)),
        "oracle": None,
    }
    known = scores["oracle"].notna().to_numpy()
    if known.any():
        result["oracle"] = metrics.report(y[known], scores["oracle"].to_numpy()[known])
        model["oracle_ratio"] = model["normalized_gini"] / result["oracle"]["normalized_gini"]
    return Evaluation(
        metrics=result,
        deciles=metrics.decile_table(y, scores["predicted"].to_numpy()),
        test_customers=int(y.size),
        train_mean=train_mean,
        churn=churn_evaluation(scores),
    )


def churn_evaluation(scores: pd.DataFrame) -> ChurnMetrics | None:
    """The churn probability judged on the held-out customers who could leave, with and without the ledger;
    None for a model without one."""
    known = scores["churned"].notna() & scores["churn_probability"].notna()
    if not known.any():
        return None
    churned = scores["churned"][known].to_numpy()
    result = {
        "model": metrics.churn_report(churned, scores["churn_probability"][known].to_numpy()),
        "model_without_ledger": metrics.churn_report(churned, scores["blind_churn_probability"][known].to_numpy()),
        "oracle": None,
    }
    oracle = scores["oracle_churn_probability"][known]
    if oracle.notna().all():  # the oracle of every customer who could leave (an older bank's oracle has none)
        result["oracle"] = metrics.churn_report(churned, oracle.to_numpy())
    return ChurnMetrics.model_validate(result)


def global_importance(model: BankingCLVModel, rows: Rows, seed: int) -> list[Importance]:
    """Permutation importance on held-out customers: the drop in R² when a feature is shuffled."""
    if rows.y.size > IMPORTANCE_ROWS:
        rows = rows.take(np.sort(np.random.default_rng(seed).choice(rows.y.size, IMPORTANCE_ROWS, replace=False)))
    result = permutation_importance(model, rows.X, rows.y, n_repeats=3, random_state=seed, n_jobs=1)
    order = np.argsort(-result.importances_mean)
    names = model.feature_names_in_
    return [
        Importance(
            feature=str(names[j]),
            importance=float(result.importances_mean[j]),
            std=float(result.importances_std[j]),
        )
        for j in order
    ]


def evaluate_saved(
    model: BankingCLVModel,
    metadata: ModelMetadata,
    data_dir: Path,
    cutoff: dt.date | None = None,
    runner: Runner | None = None,
) -> dict:
    """Metrics of a saved model on a folder, as the JSON document `model.py evaluate` prints: on its held-out
    customers when it is the training data, else on every customer eligible at the cutoff."""
    source, runner = open_bank(data_dir), runner or LocalRunner()
    cutoff = cutoff or metadata.cutoff
    same = source.fingerprint == metadata.data_fingerprint
    scores, _ = judge(
        source,
        runner,
        model,
        cutoff,
        metadata.horizon_months,
        metadata.discount_rate,
        metadata.seed if same else None,
        importance=False,
        churn_months=metadata.churn_months,
    )
    return evaluate(scores, metadata.train_mean).model_dump(mode="json") | {
        "evaluated_on": "held-out customers of the training data" if same else "every eligible customer",
        "cutoff": cutoff.isoformat(),
    }
