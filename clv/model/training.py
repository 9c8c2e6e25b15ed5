"""Training, end to end (docs/protocol.md): one read of every part for the rows to learn from (clv.model.protocol)
and the held-out rows to judge on, the fit, the held-out judging (clv.model.evaluation), the longer horizons
(clv.model.horizons), the importance and the drift profile, and the saved version."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clv.common import dates
from clv.common.cluster import LocalRunner, Runner
from clv.data.bank import only
from clv.data.contract import DataContractError
from clv.data.layout import Source, open_bank
from clv.model import artifacts
from clv.model.card import Evaluation, HorizonMetrics, Importance, ModelMetadata, RowCounts
from clv.model.config import MIN_LEARNERS, TRAIN_CUSTOMERS_FLOOR, TrainingConfig
from clv.model.estimator import BankingCLVModel
from clv.model.evaluation import (
    evaluate,
    global_importance,
    held_out_frame,
    held_out_rows,
    importance_rows,
    importance_share,
    in_order,
)
from clv.model.features import LEDGER_FEATURES
from clv.model.horizons import HORIZON_CUSTOMERS, against_oracle, fit_horizons, horizon_frame, judged_at
from clv.model.monitoring import Profile, reference_profile
from clv.model.protocol import (
    Rows,
    calibrating,
    check_cutoff,
    churn_labels,
    drawn,
    drawn_or_judged,
    judged,
    judged_share,
    learned,
    learning_share,
    rows_at,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """A trained model with what training measured of it: the card's figures and the drift reference."""

    model: BankingCLVModel
    config: TrainingConfig
    cutoff: dt.date  # the config's, or the latest whose labels are complete
    data_last_date: dt.date
    data_fingerprint: str
    synthetic_data: bool
    evaluation: Evaluation  # held out, at the cutoff
    horizons: list[HorizonMetrics]  # each horizon judged or extrapolated, the headline first
    importance: list[Importance]
    rows: RowCounts
    profile: Profile  # the training rows at the cutoff, for the drift
    seconds: float

    def metadata(self, data_dir: Path) -> dict[str, Any]:
        """metadata.json's content but for what the save adds (format, version, time, libraries, feature names)."""
        return {
            "data_dir": str(data_dir),
            "data_fingerprint": self.data_fingerprint,
            "synthetic_data": self.synthetic_data,
            "data_last_date": self.data_last_date,
            "cutoff": self.cutoff,
            "horizon_months": self.config.horizon_months,
            "churn_months": self.config.churn_label_months,
            "discount_rate": self.config.discount_rate,
            "seed": self.config.seed,
            "interval_level": self.model.interval_level,
            # the horizons have their own entry
            "params": {k: v for k, v in self.model.get_params().items() if k != "lifetime"},
            **self.evaluation.model_dump(),
            "horizons": [entry.model_dump() for entry in self.horizons],
            "importance": [entry.model_dump() for entry in self.importance],
            "rows": self.rows.model_dump(),
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class PartRows:
    """What one part gives training, from one read of it: the rows of the customers it draws to learn from, at every
    learning cutoff; those of its held-out customers judged, at the cutoff, with the oracle's columns; and those of
    its held-out customers the longer horizons are judged on, at each horizon's cutoff."""

    learning: Rows
    judged: Rows
    oracle: dict[str, np.ndarray]
    horizons: dict[int, Rows]


@dataclass(frozen=True)
class Shares:
    """The share of the training customers drawn to learn from, of the held-out customers judged at the cutoff, and
    of those the longer horizons are judged on: every part gives that share of its own, by the hash of the split."""

    learning: float
    judged: float
    horizons: float


def part_rows(
    source: Source,
    part: str,
    config: TrainingConfig,
    cutoffs: list[dt.date],
    horizons: dict[int, dt.date],
    shares: Shares,
) -> PartRows:
    """A part's rows for training (`PartRows`), from one read: only the customers drawn are built."""
    seed, rate, churn_months = config.seed, config.discount_rate, config.churn_label_months
    # the held-out customers judged at the cutoff and those the longer horizons are judged on: the larger share
    # holds the smaller, by the same hash
    held = max(shares.judged, shares.horizons)
    bank, oracle = source.load(part, keep=lambda ids: drawn_or_judged(ids, seed, shares.learning, held))
    mine = only(bank, drawn(bank.customer_id, seed, shares.learning))
    learning = rows_at(mine, cutoffs, config.horizon_months, rate, churn_months)
    mine = only(bank, judged(bank.customer_id, seed, shares.judged))
    rows, columns = held_out_rows(mine, oracle, cutoffs[0], config.horizon_months, rate, churn_months)
    mine = only(bank, judged(bank.customer_id, seed, shares.horizons))
    later = {months: rows_at(mine, [at], months, rate, churn_months) for months, at in horizons.items()}
    return PartRows(learning, rows, columns, later)


def train(
    data_dir: Path, config: TrainingConfig | None = None, runner: Runner | None = None, **options: Any
) -> TrainResult:
    """Train on 80% of customers at the cutoff (and `extra_cutoffs` earlier quarters), judge on the rest. The churn
    probability is of leaving within `churn_months`, by default the value's horizon; the value extends to `horizons`
    (clv.model.lifetime), each judged where the data reaches. `options` are TrainingConfig's fields, for a config
    made here: `train(folder, horizon_months=6)`.

    Every part is read once: it gives its share of the customers to learn from (as many as the bank's size calls
    for, `TrainingConfig.learners`), of the held-out customers judged and of those the longer horizons are judged
    on; the client fits on the first and judges on the others."""
    config = _config(config, options)
    started = time.perf_counter()
    source, runner = open_bank(data_dir), runner or LocalRunner()
    cutoff = check_cutoff(source, config.cutoff, config.label_months)
    cutoffs = config.learning_cutoffs(cutoff)
    customers = source.customers_in(source.parts)
    cap = config.learners(customers)
    shares = Shares(
        learning=learning_share(customers, cap),
        judged=judged_share(customers),
        horizons=judged_share(customers, HORIZON_CUSTOMERS),
    )
    at = judged_at(source, config.lifetime, cutoff)
    parts = runner.map(part_rows, source, label="rows", config=config, cutoffs=cutoffs, horizons=at, shares=shares)
    rows = learned(Rows.concat([part.learning for part in parts]), cap, config.seed)
    each = importance_share(len(parts))
    sample = Rows.concat([importance_rows(part.judged, config.seed, each) for part in parts])
    held = Rows.concat([part.judged for part in parts])
    oracle = {name: np.concatenate([part.oracle[name] for part in parts]) for name in parts[0].oracle}
    later = {months: Rows.concat([part.horizons[months] for part in parts]) for months in at}
    del parts  # the client keeps one copy of the rows
    learners = np.unique(rows.customer_id).size
    if learners < MIN_LEARNERS:
        raise DataContractError(
            f"{data_dir}: only {learners} customers to learn from at {cutoff} (80% of those who had joined and "
            f"not left); need {MIN_LEARNERS} or more"
        )
    logger.info(
        "rows of %d customers of %d (%.1f%% of each part's training customers drawn) at %d cutoffs in %.1f s",
        learners,
        customers,
        100 * shares.learning,
        len(cutoffs),
        time.perf_counter() - started,
    )
    # the band and the churn probability learn from the floor's worth of customers: the point model from them all
    params = {"max_band_customers": TRAIN_CUSTOMERS_FLOOR, **config.model_params}
    model = BankingCLVModel(random_state=config.seed, ledger_features=LEDGER_FEATURES, **params)
    model.fit(rows.X, rows.y, groups=rows.customer_id, churned=churn_labels(rows.churned))
    logger.info("fitted in %.1f s", time.perf_counter() - started)
    train_mean = float(rows.y[rows.cutoff == dates.to_day(cutoff)].mean())
    scores = in_order([held_out_frame(model, held, oracle, config.horizon_months, config.discount_rate)])
    evaluation = evaluate(scores, train_mean)
    judged_later = {}
    for months, then in later.items():
        calibrates = calibrating(then.customer_id, config.seed, shares.horizons)
        judged_later[months] = in_order([horizon_frame(model, then, months, config.discount_rate, calibrates)])
    fitted = fit_horizons(model, config.lifetime, cutoff, at, judged_later, evaluation)
    # a parameter set once the longer horizons are measured on the fitted model's answers: no tree depends on it
    model.set_params(lifetime=fitted.lifetime)
    horizons = against_oracle(fitted.entries, fitted.lifetime, scores)
    importance = global_importance(model, sample, config.seed)
    # the drift reference compares like with like: the rows as of the model's cutoff alone, not mixed with the
    # earlier quarter's (a same population monitored at the cutoff would otherwise drift on its history_days)
    latest = rows.take(rows.cutoff == dates.to_day(cutoff))
    profile = reference_profile(latest.X, model.predict(latest.X), outputs=churn_output(model, latest.X))
    seconds = round(time.perf_counter() - started, 1)
    logger.info("judged %d held-out customers in %.1f s", evaluation.test_customers, seconds)
    return TrainResult(
        model=model,
        config=config,
        cutoff=cutoff,
        data_last_date=dates.from_day(source.last_day),
        data_fingerprint=source.fingerprint,
        synthetic_data=source.synthetic,
        evaluation=evaluation,
        horizons=horizons,
        importance=importance,
        rows=RowCounts(train=int(rows.y.size), test=evaluation.test_customers, cutoffs=cutoffs),
        profile=profile,
        seconds=seconds,
    )


def churn_output(model: BankingCLVModel, X: pd.DataFrame) -> dict[str, np.ndarray]:
    """The model's other output the drift profile covers: its churn probability, when it has one."""
    return {} if model.churn_ is None else {"churn_probability": model.predict_churn(X)}


def train_and_save(
    data_dir: Path,
    model_dir: Path,
    config: TrainingConfig | None = None,
    runner: Runner | None = None,
    signing_key: Path | None = None,
    **options: Any,
) -> tuple[Path, ModelMetadata]:
    """Train on a folder, save a new version (signed with the private key file `signing_key`, if given) and make it
    latest; return its folder and metadata. `options` are TrainingConfig's fields, for a config made here:
    `train_and_save(folder, models, horizon_months=6)`."""
    result = train(data_dir, _config(config, options), runner)
    importance = [entry.model_dump() for entry in result.importance]
    metadata = result.metadata(data_dir)
    path = artifacts.save(result.model, metadata, importance, result.profile, model_dir, signing_key)
    return path, artifacts.read_metadata(path)


def _config(config: TrainingConfig | None, options: dict[str, Any]) -> TrainingConfig:
    if config is not None and options:
        raise TypeError(f"give a TrainingConfig or its fields ({', '.join(options)}), not both")
    return config or TrainingConfig(**options)
