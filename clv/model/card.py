"""What training measured and saved, typed: `ModelMetadata` is `metadata.json` in a model's folder, and the
metric types its evaluation is made of (the service's card view, clv.service.schemas.card, shows a part of it). A
metric that cannot be computed (a total error over a zero sum) is None, never NaN, so that every document is valid
JSON.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from clv.data.defaults import CHURN_MONTHS


class Card(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def _nan_is_none(value: object) -> object:
    return None if isinstance(value, float) and not math.isfinite(value) else value


Metric = Annotated[float | None, BeforeValidator(_nan_is_none)]  # a metric that cannot be computed is None


class MetricSet(Card):
    """The held-out metrics of one set of predictions (docs/metrics.md)."""

    normalized_gini: Metric
    spearman: Metric
    decile_mape: Metric
    total_error: Metric
    mae: Metric
    rmse: Metric
    r2: Metric
    interval_coverage: Metric = None
    oracle_ratio: Metric = None


class Metrics(Card):
    model: MetricSet
    model_without_ledger: MetricSet
    baseline_last12: MetricSet
    baseline_mean: MetricSet
    oracle: MetricSet | None = Field(None, description="Present when the data carries its oracle for the cutoff.")


class Decile(Card):
    decile: int
    customers: int
    mean_predicted: float
    mean_actual: float


class ReliabilityBin(Card):
    bin: int
    low: float
    high: float
    customers: int
    mean_predicted: float
    churn_rate: float = Field(description="Share of the bin's customers who left within churn_months.")


class ChurnMetricSet(Card):
    """How good a churn probability is on held-out customers (docs/metrics.md)."""

    customers: int = Field(description="Held-out customers who could leave: those holding a product at the cutoff.")
    base_rate: float = Field(description="Share of them who left within churn_months.")
    brier: float
    brier_skill: Metric = Field(description="1 - Brier / Brier of always predicting the base rate.")
    auc: Metric
    ece: float = Field(description="Expected calibration error over 10 equal-width bins.")
    reliability: list[ReliabilityBin]


class ChurnMetrics(Card):
    model: ChurnMetricSet
    model_without_ledger: ChurnMetricSet
    oracle: ChurnMetricSet | None = Field(None, description="Present when the data carries its oracle for the cutoff.")


class HorizonMetrics(Card):
    """One horizon's value judged on what happened after a cutoff (docs/protocol.md#horizons), or the word that it
    is extrapolated."""

    months: int
    served: bool = Field(description="Predictions carry this horizon; the others are judged only.")
    judged: bool = Field(description="Judged on realized outcomes; false: past the data, extrapolated.")
    cutoff: dt.date | None = Field(description="Where it was judged: the training cutoff, or an earlier one.")
    customers: int | None = Field(None, description="The held-out customers it was judged on.")
    model: MetricSet | None = None
    model_without_ledger: MetricSet | None = None
    baseline_annuity: MetricSet | None = Field(
        None, description="The last 12 months' value x the horizon's discount factors / 12."
    )
    against_oracle: MetricSet | None = Field(
        None,
        description="On a generated bank: the value at the training cutoff judged against the oracle's "
        "expected value of each held-out customer (no noise: what a perfect model would predict).",
    )
    extrapolated_from: int | None = Field(
        None,
        description="The longest judged horizon whose interval margin this one carries, scaled; none: the "
        "headline's band, scaled.",
    )


class Importance(Card):
    feature: str
    importance: float = Field(description="Drop in R² on held-out customers when the feature is shuffled.")
    std: float


class RowCounts(Card):
    train: int
    test: int
    cutoffs: list[dt.date]


class Evaluation(Card):
    """Held-out metrics of a model against the baselines and (when known) the oracle."""

    metrics: Metrics
    deciles: list[Decile]
    test_customers: int
    train_mean: float
    churn: ChurnMetrics | None = Field(None, description="The churn probability's metrics; none for an older model.")


class ModelMetadata(Evaluation):
    """metadata.json: how a model was trained, on what, and how well it did."""

    format: int
    version: str
    trained_at: dt.datetime
    data_dir: str
    data_fingerprint: str
    data_last_date: dt.date
    cutoff: dt.date
    horizon_months: int
    churn_months: int = CHURN_MONTHS
    horizons: list[HorizonMetrics] = Field(default_factory=list, description="None for a model before horizons.")
    discount_rate: float
    seed: int
    interval_level: float
    params: dict[str, Any]
    importance: list[Importance]
    rows: RowCounts
    seconds: float
    libraries: dict[str, str]
    feature_names: list[str]
    synthetic_data: bool = Field(description="Trained on a bank made by this project's generator, not a real one.")
