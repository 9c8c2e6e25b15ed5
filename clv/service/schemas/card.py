"""What `/model` shows: the part of a model's metadata the page draws, and the drift of the recent requests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field

from clv.model.card import (
    Card,
    ChurnMetrics,
    Decile,
    HorizonMetrics,
    Importance,
    Metrics,
    ModelMetadata,
    RowCounts,
)
from clv.model.monitoring import DriftReport

CONFIDENCE_DEFINITION = "1 / (1 + (high - low) / max(|predicted|, scale))"


class Drift(Card):
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


class ModelCard(Card):
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
    def of(cls, metadata: ModelMetadata, confidence_scale: float, drift: Drift | None = None) -> ModelCard:
        shown = metadata.model_dump(include=set(cls.model_fields) - {"importance", "drift"})
        return cls(**shown, importance=metadata.importance[:15], confidence_scale=confidence_scale, drift=drift)
