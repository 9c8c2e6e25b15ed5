"""What the service answers, typed: predictions, health, and the shape of every refusal."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field


class Interval(BaseModel):
    low: float
    high: float
    level: float = Field(description="Nominal coverage of the interval, e.g. 0.8.")


class Driver(BaseModel):
    feature: str
    value: float | None = Field(description="The customer's value of the feature; null when unknown.")
    contribution: float = Field(description="How much the feature moves this prediction from drivers_base.")


class HorizonValue(BaseModel):
    months: int
    clv: float = Field(description="Discounted net margin over these months; the first horizon is predicted_clv.")
    low: float
    high: float


class CurvePoint(BaseModel):
    month: int = Field(description="Months after as_of's month, 1 to the longest horizon.")
    survival: float = Field(ge=0, le=1, description="P(still a customer in this month).")
    expected_margin: float = Field(description="survival x the margin of a customer who stays; not discounted.")
    cumulative_clv: float = Field(
        description="The discounted expected margins up to this month: at a horizon's "
        "month, that horizon's clv (to rounding)."
    )


class PredictionOut(BaseModel):
    customer_id: int
    predicted_clv: float = Field(description="Discounted net margin over the next horizon_months.")
    clv_interval: Interval
    confidence_score: float = Field(ge=0, le=1, description="1 / (1 + interval width / max(|prediction|, scale)).")
    horizon_months: int
    churn_probability: float | None = Field(
        ge=0,
        le=1,
        description="Probability of holding no open product churn_months after as_of (without products: "
        "of no money in); null when churn_reason says why.",
    )
    churn_months: int
    churn_reason: str | None = Field(description="Why churn_probability is null; null when it is given.")
    horizons: list[HorizonValue] = Field(
        description="The value over each horizon with its interval (interval level as clv_interval's), headline first; "
        "GET /model says which horizons were judged on realized outcomes and which are extrapolated."
    )
    curve: list[CurvePoint] | None = Field(
        None, description="Month by month to the longest horizon; only with ?curve=true."
    )
    as_of: dt.date
    drivers: list[Driver] = Field(description="Top features moving this prediction from drivers_base.")
    drivers_base: float = Field(description="The average prediction the drivers start from.")
    model_version: str
    # the service writes it, to the millisecond as it always has (2024-12-31T10:00:00.123+00:00): a string,
    # documented as a date-time, that no parse and format could change on the way out
    prediction_timestamp: str = Field(json_schema_extra={"format": "date-time"})


class BatchOut(BaseModel):
    predictions: list[PredictionOut]


class Health(BaseModel):
    """The status for anyone; the details only for a caller with clv:read (or with authentication off)."""

    status: Literal["ok"]
    model_version: str | None = Field(
        None, description="The version serving now; it changes when a new latest is taken up."
    )
    trained_at: dt.datetime | None = None
    uptime_seconds: float | None = None
    synthetic_data: bool | None = Field(
        None, description="The serving model was trained on a generated bank, not a real one."
    )


class Alive(BaseModel):
    status: Literal["alive"]


class Ready(BaseModel):
    status: Literal["ready"]
    model_version: str


class Unavailable(BaseModel):
    """No model serves: why, and what to do about it."""

    status: Literal["unavailable"]
    reason: str = Field(description="Why, in words without paths; the service's log has the details.")
    request_id: str | None = Field(None, description="This answer's X-Request-ID.")


class Problem(BaseModel):
    """A refusal that is not about one field: 401, 403, 413, 429, 503, 500."""

    detail: str
    request_id: str | None = Field(None, description="On a 500 or 503: the id the service's log has the details under.")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where the error is, as FastAPI names it: ['body', 'age'].")
    field: str = Field(description="The same place as a path: customers[3].age; 'body' for the body as a whole.")
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """422: every field that is wrong, named, without echoing the input."""

    detail: list[FieldError]
