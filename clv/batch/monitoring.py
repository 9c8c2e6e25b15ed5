"""Input drift of a bank's customers against a model's training rows: a seeded sample, part by part."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from clv.common import dates
from clv.common.cluster import Runner
from clv.data.layout import Source
from clv.model.artifacts import LoadedModel
from clv.model.estimator import BankingCLVModel
from clv.model.features import build_features
from clv.model.labels import eligible
from clv.model.monitoring import DriftReport, drift

MONITOR_ROWS = 200_000  # a random sample this large measures a distribution to well under PSI 0.01


def monitor_rows(source: Source, part: str, model: BankingCLVModel, as_of: dt.date, share: float, seed: int):
    """A seeded sample (`share` of them) of a part's customers who count as of `as_of` (joined, not gone, as
    in training): their feature rows, predictions and churn probabilities."""
    bank = source.load(part)[0]
    day = dates.to_day(as_of)
    keep = np.flatnonzero(eligible(bank, day))
    rng = np.random.default_rng([seed, source.parts.index(part)])
    keep = np.sort(rng.choice(keep, min(keep.size, max(1, round(share * keep.size))), replace=False))
    X = build_features(bank, day).iloc[keep].reset_index(drop=True)
    out = model.predict_all(X, contributions=False)
    return X, out["point"], out["churn"]


def monitor(
    source: Source, runner: Runner, loaded: LoadedModel, as_of: dt.date | None, seed: int = 42
) -> tuple[DriftReport, pd.DataFrame]:
    """The input drift of a bank's customers as of a date against the model's training rows, with the rows."""
    X, predictions, churn = monitored(source, runner, loaded.model, as_of or dates.from_day(source.last_day), seed)
    outputs = {"churn_probability": churn}
    return drift(loaded.profile, X, predictions, tuple(loaded.model.ledger_features), outputs=outputs), X


def monitored(
    source: Source, runner: Runner, model: BankingCLVModel, as_of: dt.date, seed: int = 42
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """A seeded sample of the bank's customers who count as of `as_of` (at most MONITOR_ROWS of them, part by
    part): their feature rows, the model's predictions and churn probabilities."""
    share = min(1.0, MONITOR_ROWS / max(1, source.customers_in(source.parts)))
    parts = runner.map(
        monitor_rows, source, label="monitored", model=runner.share(model), as_of=as_of, share=share, seed=seed
    )
    return (
        pd.concat([X for X, _, _ in parts], ignore_index=True),
        np.concatenate([p for _, p, _ in parts]),
        np.concatenate([c for _, _, c in parts]),
    )
