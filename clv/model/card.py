"""The model's metadata and its card, typed: what training measured and saved, what `/model` shows.

`ModelMetadata` is `metadata.json` in a model's folder; `ModelCard` is the part of it that the service
shows at `/model` and the page draws. A metric that cannot be computed (a total error over a zero sum)
is None, never NaN, so that every document is valid JSON.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from clv.data.schema import CHURN_MONTHS
from clv.model.monitoring import DriftReport

CONFIDENCE_DEFINITION = "1 / (1 + (high - low) / max(|predicted|, scale))"


class _Card(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def _nan_is_none(value: object) -> object:
    return None if isinstance(value, float) and not math.isfinite(value) else value


Metric = Annotated[float | None, BeforeValidator(_nan_is_none)]  # a metric that cannot be computed is None


class MetricSet(_Card):
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


class Metrics(_Card):
    model: MetricSet
    model_without_ledger: MetricSet
    baseline_last12: MetricSet
    baseline_mean: MetricSet
    oracle: MetricSet | None = Field(None, description="Present when the data carries its oracle for the cutoff.")


class Decile(_Card):
    decile: int
    customers: int
    mean_predicted: float
    mean_actual: float


class ReliabilityBin(_Card):
    bin: int
    low: float
    high: float
    customers: int
    mean_predicted: float
    churn_rate: float = Field(description="Share of the bin's customers who left within churn_months.")


class ChurnMetricSet(_Card):
    """How good a churn probability is on held-out customers (docs/metrics.md)."""

    customers: int = Field(description="Held-out customers who could leave: those holding a product at the cutoff.")
    base_rate: float = Field(description="Share of them who left within churn_months.")
    brier: float
    brier_skill: Metric = Field(description="1 - Brier / Brier of always predicting the base rate.")
    auc: Metric
    ece: float = Field(description="Expected calibration error over 10 equal-width bins.")
    reliability: list[ReliabilityBin]


class ChurnMetrics(_Card):
    model: ChurnMetricSet
    model_without_ledger: ChurnMetricSet
    oracle: ChurnMetricSet | None = Field(None, description="Present when the data carries its oracle for the cutoff.")


class HorizonMetrics(_Card):
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


class Importance(_Card):
    feature: str
    importance: float = Field(description="Drop in R² on held-out customers when the feature is shuffled.")
    std: float


class RowCounts(_Card):
    train: int
    test: int
    cutoffs: list[dt.date]


class Evaluation(_Card):
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


class Drift(_Card):
    """The input drift of the service's recent requests against the model's training rows (PSI)."""

    rows: int = Field(description="Recent request rows measured.")
    features: dict[str, float] = Field(description="PSI by feature; the ledger's only over rows that carry one.")
    prediction: float | None
    drifted: list[str] = Field(description="Features at 0.1 or more (moderate), most drifted first.")
    thresholds: dict[str, float] = Field(description="Below moderate: stable; above significant: significant.")

    @classmethod
    def of(cls, report: DriftReport) -> Drift:
        data = report.to_json()
        return cls(
            rows=report.rows,
            features=data["features"],
            prediction=data["prediction"],
            drifted=data["drifted"],
            thresholds=data["thresholds"],
        )


class ModelCard(_Card):
    """What `/model` shows: data, cutoff, held-out metrics against the baselines, deciles, importance."""

    version: str
    trained_at: dt.datetime
    data_dir: str
    synthetic_data: bool
    data_last_date: dt.date
    cutoff: dt.date
    horizon_months: int
    churn_months: int
    discount_rate: float
    interval_level: float
    metrics: Metrics
    churn: ChurnMetrics | None
    horizons: list[HorizonMetrics] = Field(description="Each horizon, judged or extrapolated; the headline first.")
    deciles: list[Decile]
    importance: list[Importance] = Field(description="The 15 most important features, most important first.")
    rows: RowCounts
    libraries: dict[str, str]
    params: dict[str, Any]
    seconds: float
    confidence_definition: str = CONFIDENCE_DEFINITION
    confidence_scale: float = Field(description="The median absolute training label: the `scale` of the definition.")
    drift: Drift | None = Field(None, description="Recent requests against the training rows; none before 50 rows.")

    @classmethod
    def of(cls, metadata: ModelMetadata, confidence_scale: float) -> ModelCard:
        shown = metadata.model_dump(include=set(cls.model_fields) - {"importance"})
        return cls(**shown, importance=metadata.importance[:15], confidence_scale=confidence_scale)
