"""The honest protocol: features as of cutoffs, labels from the months after, customers split 80/20."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance

from clv import artifacts, dates, metrics
from clv.artifacts import fingerprint
from clv.bank import Bank, load_bank
from clv.contract import DataContractError, find_table
from clv.estimator import BankingCLVModel, without_ledger
from clv.features import FEATURE_NAMES, build_features
from clv.labels import eligible, future_value
from clv.schema import TABLES

logger = logging.getLogger(__name__)

MARGIN_12M = FEATURE_NAMES.index("margin_12m")
MAX_TRAIN_CUSTOMERS = 15_000
IMPORTANCE_ROWS = 2_000
INFLOW_365D = FEATURE_NAMES.index("inflow_365d")


@dataclass
class Rows:
    X: np.ndarray
    y: np.ndarray
    customer_id: np.ndarray
    cutoff: np.ndarray  # day of each row's as-of date


@dataclass
class TrainResult:
    model: BankingCLVModel
    cutoff: dt.date
    data_last_date: dt.date
    report: dict = field(default_factory=dict)


def default_cutoff(bank: Bank, horizon_months: int) -> dt.date:
    """The data's last month end minus the horizon: the latest cutoff whose label is complete."""
    return dates.add_months(dates.last_month_end(dates.from_day(bank.last_day())), -horizon_months)


def rows_at(bank: Bank, cutoffs: list[dt.date], horizon_months: int, discount_rate: float) -> Rows:
    parts = []
    for cutoff in cutoffs:
        day = dates.to_day(cutoff)
        keep = eligible(bank, day)
        X = build_features(bank, day)[keep]
        y = future_value(bank, day, horizon_months, discount_rate)[keep]
        parts.append(Rows(X, y, bank.customer_id[keep], np.full(int(keep.sum()), day)))
    return Rows(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("X", "y", "customer_id", "cutoff")))


def held_out(customer_id: np.ndarray, seed: int, share: float = 0.2) -> np.ndarray:
    """Rows of the customers held out for evaluation. A customer's fate depends only on its id and the
    seed (a multiplicative hash), so any subset of rows, at any cutoff, agrees with training's split."""
    offset = np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
    mixed = (np.asarray(customer_id, np.uint64) + offset) * np.uint64(0xBF58476D1CE4E5B9)  # wraps mod 2**64
    return (mixed >> np.uint64(40)).astype(np.float64) / 2**24 < share


def last12_baseline(X: np.ndarray, horizon_months: int, discount_rate: float) -> np.ndarray:
    """The last 12 months' value repeated (ledger margin, or positive inflows without a ledger), discounted."""
    monthly = np.where(np.isnan(X[:, MARGIN_12M]), X[:, INFLOW_365D], X[:, MARGIN_12M]) / 12
    return np.nan_to_num(monthly) * dates.discount_factors(horizon_months, discount_rate).sum()


def read_oracle(data_dir: Path, cutoff: dt.date) -> pd.Series | None:
    path = find_table(Path(data_dir), "oracle_clv")
    if path is None:
        return None
    oracle = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    if str(oracle["as_of"].iloc[0]) != cutoff.isoformat():
        logger.info("oracle is as of %s, not the cutoff %s: not compared", oracle["as_of"].iloc[0], cutoff)
        return None
    return oracle.set_index("customer_id")["expected_clv"]


def train(
    data_dir: Path,
    cutoff: dt.date | None = None,
    horizon_months: int = 12,
    discount_rate: float = 0.10,
    seed: int = 42,
    extra_cutoffs: int = 1,
    max_train_customers: int = MAX_TRAIN_CUSTOMERS,
    **params: object,
) -> TrainResult:
    """Train on 80% of customers at the cutoff (and `extra_cutoffs` earlier quarters), evaluate on the rest."""
    started = time.perf_counter()
    bank = load_bank(data_dir)
    last = dates.from_day(bank.last_day())
    cutoff = cutoff or default_cutoff(bank, horizon_months)
    if dates.to_day(dates.shift_months(cutoff, horizon_months)) > bank.last_day():
        raise DataContractError(
            f"--cutoff {cutoff}: the {horizon_months} months after it run past the data's last date {last}; "
            f"use {default_cutoff(bank, horizon_months)} or earlier"
        )
    logger.info("read %d customers from %s in %.1f s", bank.size, data_dir, time.perf_counter() - started)
    cutoffs = [cutoff, *(dates.add_months(cutoff, -3 * k) for k in range(1, extra_cutoffs + 1))]
    rows = rows_at(bank, cutoffs, horizon_months, discount_rate)
    if rows.y.size < 50:
        raise DataContractError(f"{data_dir}: only {rows.y.size} customers had joined by {cutoff}; need 50 or more")
    is_test = held_out(rows.customer_id, seed)
    train_rows = ~is_test
    learners = np.unique(rows.customer_id[train_rows])
    if learners.size > max_train_customers:  # past this the held-out metrics stop improving; the fit time does not
        keep = np.random.default_rng(seed).choice(learners, max_train_customers, replace=False)
        train_rows &= np.isin(rows.customer_id, keep)
        logger.info("learning from %d of %d training customers", max_train_customers, learners.size)
    logger.info(
        "features for %d rows at %d cutoffs in %.1f s", rows.y.size, len(cutoffs), time.perf_counter() - started
    )
    model = BankingCLVModel(random_state=seed, **params)
    model.fit(rows.X[train_rows], rows.y[train_rows], groups=rows.customer_id[train_rows])
    logger.info("fitted in %.1f s", time.perf_counter() - started)

    main = rows.cutoff == dates.to_day(cutoff)
    test = is_test & main
    train_mean = float(rows.y[train_rows & main].mean())
    oracle = read_oracle(data_dir, cutoff)
    report = evaluate(
        model, rows.X[test], rows.y[test], rows.customer_id[test], horizon_months, discount_rate, train_mean, oracle
    )
    report["importance"] = global_importance(model, rows.X[test], rows.y[test], seed)
    report["rows"] = {"train": int(train_rows.sum()), "test": int(test.sum()), "cutoffs": [str(c) for c in cutoffs]}
    report["data_fingerprint"] = data_fingerprint(data_dir)
    report["seconds"] = round(time.perf_counter() - started, 1)
    logger.info("evaluated in %.1f s", report["seconds"])
    return TrainResult(model, cutoff, last, report)


def data_fingerprint(data_dir: Path) -> str:
    paths = [find_table(Path(data_dir), name) for name in TABLES]
    return fingerprint([p for p in paths if p is not None])


def evaluate_saved(model: BankingCLVModel, metadata: dict, data_dir: Path, cutoff: dt.date | None = None) -> dict:
    """Metrics of a saved model on a folder: on its held-out customers when it is the training data,
    else on every customer eligible at the cutoff."""
    bank = load_bank(data_dir)
    horizon, rate = metadata["horizon_months"], metadata["discount_rate"]
    cutoff = cutoff or dt.date.fromisoformat(metadata["cutoff"])
    rows = rows_at(bank, [cutoff], horizon, rate)
    same = data_fingerprint(data_dir) == metadata.get("data_fingerprint")
    test = held_out(rows.customer_id, metadata["seed"]) if same else np.ones(rows.y.size, bool)
    train_mean = float(rows.y[~test].mean()) if (~test).any() else metadata["train_mean"]
    result = evaluate(model, rows.X[test], rows.y[test], rows.customer_id[test], horizon, rate, train_mean,
                      oracle=read_oracle(data_dir, cutoff))  # fmt: skip
    result["evaluated_on"] = "held-out customers of the training data" if same else "every eligible customer"
    result["cutoff"] = cutoff.isoformat()
    return result


def evaluate(
    model: BankingCLVModel,
    X: np.ndarray,
    y: np.ndarray,
    customer_id: np.ndarray,
    horizon_months: int,
    discount_rate: float,
    train_mean: float,
    oracle: pd.Series | None = None,
) -> dict:
    """Held-out metrics of the model, the baselines and (when known) the oracle, under one stable shape."""
    out = model.predict_all(X, contributions=False)
    blind = model.predict_all(without_ledger(X), contributions=False)
    result = {
        "model": metrics.report(y, out["point"], out["low"], out["high"]),
        "model_without_ledger": metrics.report(y, blind["point"], blind["low"], blind["high"]),
        "baseline_last12": metrics.report(y, last12_baseline(X, horizon_months, discount_rate)),
        "baseline_mean": metrics.report(y, np.full(y.size, train_mean)),
        "oracle": None,
    }
    if oracle is not None:
        expected = oracle.reindex(customer_id).to_numpy(np.float64)
        known = ~np.isnan(expected)
        result["oracle"] = metrics.report(y[known], expected[known])
        result["model"]["oracle_ratio"] = result["model"]["normalized_gini"] / result["oracle"]["normalized_gini"]
    deciles = metrics.decile_table(y, out["point"])
    return {"metrics": result, "deciles": deciles, "test_customers": int(y.size), "train_mean": train_mean}


def global_importance(model: BankingCLVModel, X: np.ndarray, y: np.ndarray, seed: int) -> list[dict]:
    """Permutation importance on held-out customers: the drop in R² when a feature is shuffled."""
    if y.size > IMPORTANCE_ROWS:
        pick = np.random.default_rng(seed).choice(y.size, IMPORTANCE_ROWS, replace=False)
        X, y = X[pick], y[pick]
    result = permutation_importance(model, X, y, n_repeats=3, random_state=seed, n_jobs=1)
    order = np.argsort(-result.importances_mean)
    return [
        {
            "feature": FEATURE_NAMES[j],
            "importance": float(result.importances_mean[j]),
            "std": float(result.importances_std[j]),
        }
        for j in order
    ]


def train_and_save(
    data_dir: Path,
    model_dir: Path,
    cutoff=None,
    horizon_months: int = 12,
    discount_rate: float = 0.10,
    seed: int = 42,
) -> tuple[Path, dict]:
    """Train on a folder, save a new version and make it latest; return its folder and metadata."""
    result = train(data_dir, cutoff, horizon_months, discount_rate, seed)
    report = result.report
    metadata = {
        "data_dir": str(data_dir),
        "data_fingerprint": report.pop("data_fingerprint"),
        "data_last_date": result.data_last_date.isoformat(),
        "cutoff": result.cutoff.isoformat(),
        "horizon_months": horizon_months,
        "discount_rate": discount_rate,
        "seed": seed,
        "interval_level": result.model.interval_level,
        "params": result.model.get_params(),
        **report,
    }
    path = artifacts.save(result.model, metadata, report["importance"], model_dir)
    return path, json.loads((path / "metadata.json").read_text())
