"""The portfolio of a scoring run (docs/portfolio.md): what the bank is worth at each horizon, how the value is
spread over customers and segments, how much of it sits with customers likely to leave, and who they are.

It is computed part by part, where each part is scored. A part gives a `Summary`: its sums by horizon and
segment, a histogram of its values and its own top of the value at risk. Summaries merge, so no whole-bank frame
reaches the client. `portfolio` turns the merged summary into the typed `Portfolio` that `portfolio.json`,
`GET /portfolio`, the page and the report show.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from clv.data.bank import Bank
from clv.data.schema import AcquisitionChannel, ProductType, Region
from clv.model.card import ModelMetadata

PORTFOLIO = "portfolio.json"
SEGMENTS = ("region", "acquisition_channel", "age_band", "income_band", "tenure_band", "product_mix")
AT_RISK = 100  # customers in the at-risk list
STEP = 0.01  # the value histogram's bins: 1% apart in log(1 + |value|)
UNKNOWN = "unknown"
AGE_BANDS = ((0, "under 30"), (30, "30-44"), (45, "45-59"), (60, "60 and over"))
INCOME_BANDS = (
    (0, "under 25k"),
    (25_000, "25k-50k"),
    (50_000, "50k-100k"),
    (100_000, "100k-200k"),
    (200_000, "200k and over"),
)
TYPES = list(ProductType)


# ---- what portfolio.json holds ----------------------------------------------------------------


class HorizonTotal(BaseModel):
    months: int
    total: float = Field(description="The bank's value over these months: the sum of every customer's.")
    low: float = Field(description="The interval of the sum, not the sum of the customers' intervals: see method.")
    high: float


class DecileShare(BaseModel):
    decile: int = Field(description="1: the tenth of customers with the highest headline value.")
    customers: int
    value: float
    share: float | None = Field(description="Of the bank's headline value; null when the bank's value is 0.")
    low_clv: float = Field(description="The decile's lowest headline value (to the histogram's 1%).")
    high_clv: float


class SegmentRow(BaseModel):
    segment: str
    customers: int
    value: float = Field(description="The sum of the headline value.")
    value_at_risk: float = Field(description="The sum of max(clv, 0) x churn_probability.")
    churn_rate: float | None = Field(description="The mean churn probability of those who have one.")
    mean_clv: float


class DriverShare(BaseModel):
    feature: str
    contribution: float


class AtRisk(BaseModel):
    customer_id: int
    clv: float
    churn_probability: float
    value_at_risk: float
    driver: str = Field(description="The feature that moves this customer's value most.")
    drivers: list[DriverShare] = Field(description="The top drivers, as in the scores.")


class Portfolio(BaseModel):
    """portfolio.json: a scoring run's bank as a whole."""

    run: str = Field(description="The run's folder name, or the scores file's name.")
    scored_at: dt.datetime
    model_version: str
    as_of: dt.date
    data_dir: str
    data_fingerprint: str
    headline_months: int
    interval_level: float
    customers: int
    horizons: list[HorizonTotal]
    interval_method: str
    value_at_risk: float = Field(description="The sum of max(clv, 0) x churn_probability at the headline horizon.")
    deciles: list[DecileShare]
    segments: dict[str, list[SegmentRow]] = Field(description=f"By kind: {', '.join(SEGMENTS)}.")
    at_risk: list[AtRisk] = Field(description=f"The top {AT_RISK} customers by value at risk, highest first.")


INTERVAL_METHOD = (
    "the sum's own interval: the customers' independent errors, each read off its interval as a normal spread "
    "(width / (2 z)), add up as variances and shrink with the bank's size; the model's error on a whole bank does "
    "not, and is taken as the held-out total error of that horizon (or, past the data, its error against the "
    "oracle); the two are combined as independent parts: z x sqrt(sum of variances) and |total error| x total"
)


# ---- a part's sums ----------------------------------------------------------------------------


@dataclass
class Summary:
    """A part's contribution to the portfolio; `merge` adds two."""

    customers: int = 0
    horizons: dict[int, list[float]] = field(default_factory=dict)  # months: [total, sum of variances]
    value_at_risk: float = 0.0
    bins: dict[int, list[float]] = field(default_factory=dict)  # histogram key: [customers, value]
    segments: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # kind: label: sums, see _SUMS
    at_risk: list[dict] = field(default_factory=list)

    def merge(self, other: Summary) -> Summary:
        def add(a: dict, b: dict) -> dict:
            return {
                k: [x + y for x, y in zip(a[k], b[k], strict=True)] if k in a and k in b else a.get(k, b.get(k))
                for k in a.keys() | b.keys()
            }

        return Summary(
            self.customers + other.customers,
            add(self.horizons, other.horizons),
            self.value_at_risk + other.value_at_risk,
            add(self.bins, other.bins),
            {
                kind: add(self.segments.get(kind, {}), other.segments.get(kind, {}))
                for kind in self.segments.keys() | other.segments.keys()
            },
            _top(self.at_risk + other.at_risk),
        )


_SUMS = ("customers", "value", "value_at_risk", "churn_sum", "churn_known")


def summarize(frame: pd.DataFrame, labels: pd.DataFrame, horizons: tuple[int, ...], level: float) -> Summary:
    """A scored part's Summary: `frame` as the scores file holds it, `labels` its rows' segments."""
    z = NormalDist().inv_cdf(0.5 + level / 2)
    value = frame["predicted_clv"].to_numpy(np.float64)
    churn = frame["churn_probability"].to_numpy(np.float64)
    at_risk = np.maximum(value, 0) * np.nan_to_num(churn)
    sums = {}
    for months, columns in horizon_frame_columns(horizons):
        low, high = (frame[c].to_numpy(np.float64) for c in columns[1:])
        spread = (high - low) / (2 * z)
        sums[months] = [float(frame[columns[0]].sum()), float(np.sum(spread**2))]
    keys = np.rint(np.sign(value) * np.log1p(np.abs(value)) / STEP).astype(np.int64)
    unique, inverse = np.unique(keys, return_inverse=True)
    counts, values = np.bincount(inverse), np.bincount(inverse, weights=value)
    bins = {int(k): [float(c), float(v)] for k, c, v in zip(unique, counts, values, strict=True)}
    known = ~np.isnan(churn)
    parts = pd.DataFrame(
        {
            "customers": 1.0,
            "value": value,
            "value_at_risk": at_risk,
            "churn_sum": np.where(known, churn, 0.0),
            "churn_known": known.astype(np.float64),
        }
    )
    segments = {}
    for kind in SEGMENTS:
        grouped = parts.groupby(labels[kind].to_numpy(), sort=True).sum()
        segments[kind] = {str(name): [float(row[s]) for s in _SUMS] for name, row in grouped.iterrows()}
    top = np.argsort(-at_risk, kind="stable")[:AT_RISK]
    top = top[at_risk[top] > 0]
    risk = [_at_risk(frame.iloc[i], float(at_risk[i])) for i in top]
    return Summary(len(frame), sums, float(at_risk.sum()), bins, segments, risk)


def horizon_frame_columns(horizons: tuple[int, ...]) -> list[tuple[int, tuple[str, str, str]]]:
    """Each horizon's value, low and high columns in the scores (the headline first)."""
    head = (horizons[0], ("predicted_clv", "clv_low", "clv_high"))
    return [head, *((m, (f"clv_{m}m", f"clv_{m}m_low", f"clv_{m}m_high")) for m in horizons[1:])]


def _at_risk(row: pd.Series, value_at_risk: float) -> dict:
    drivers = []
    for k in range(1, 4):
        name = row.get(f"driver_{k}")
        if isinstance(name, str) and name:
            drivers.append({"feature": name, "contribution": float(row[f"driver_{k}_contribution"])})
    return {
        "customer_id": int(row["customer_id"]),
        "clv": float(row["predicted_clv"]),
        "churn_probability": float(row["churn_probability"]),
        "value_at_risk": round(value_at_risk, 2),
        "driver": drivers[0]["feature"] if drivers else "",
        "drivers": drivers,
    }


def _top(rows: list[dict]) -> list[dict]:
    """The AT_RISK highest values at risk; ties by customer id, so that any order of parts gives one list."""
    return sorted(rows, key=lambda r: (-r["value_at_risk"], r["customer_id"]))[:AT_RISK]


# ---- segments of a bank's customers -------------------------------------------------------------


def segment_labels(bank: Bank, day: int, rows: np.ndarray) -> pd.DataFrame:
    """Each of the bank's customers at positions `rows`, by segment kind: region, acquisition channel, age, income,
    join year (tenure) and the mix of products open at `day`."""

    def banded(values: np.ndarray, bands: tuple) -> np.ndarray:
        edges = np.array([edge for edge, _ in bands[1:]], np.float64)
        names = np.array([name for _, name in bands] + [UNKNOWN], dtype=object)
        return names[np.where(np.isnan(values), len(bands), np.searchsorted(edges, values, side="right"))]

    def coded(codes: np.ndarray, enum: type) -> np.ndarray:
        names = np.array([*[str(member) for member in enum], UNKNOWN], dtype=object)
        return names[np.where(codes < 0, len(names) - 1, codes)]

    first = bank.first_day()[rows]
    known = ~np.isnan(first)
    years = np.full(rows.size, UNKNOWN, dtype=object)
    years[known] = (
        np.asarray(first[known], np.int64).astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    ).astype(str)
    return pd.DataFrame(
        {
            "region": coded(bank.region[rows], Region),
            "acquisition_channel": coded(bank.acquisition[rows], AcquisitionChannel),
            "age_band": banded(bank.age[rows], AGE_BANDS),
            "income_band": banded(bank.income[rows], INCOME_BANDS),
            "tenure_band": years,
            "product_mix": _product_mix(bank, day)[rows],
        }
    )


def _product_mix(bank: Bank, day: int) -> np.ndarray:
    """Each customer's open products at `day` as one label ("Checking + Savings"); "none" for a customer holding
    none, and "unknown" for every customer of a log without products."""
    if not bank.products:
        return np.full(bank.size, UNKNOWN, dtype=object)
    p = bank.products
    is_open = bank.product_state(float(day))[2] & (p["type"] >= 0)
    mask = np.zeros(bank.size, np.int64)
    # a bit a product type, shifted in int64: the codes are int8, which an eighth type would overflow
    np.bitwise_or.at(mask, p["cust"][is_open], np.left_shift(np.int64(1), p["type"][is_open]))
    codes, inverse = np.unique(mask, return_inverse=True)
    names = np.array(
        [" + ".join(str(t) for j, t in enumerate(TYPES) if code >> j & 1) or "none" for code in codes], dtype=object
    )
    return names[inverse]


# ---- the bank as a whole ----------------------------------------------------------------------


def portfolio(
    summary: Summary,
    metadata: ModelMetadata,
    horizons: tuple[int, ...],
    run: str,
    as_of: dt.date,
    data_dir: str,
    fingerprint: str,
) -> Portfolio:
    """The merged summary as the typed portfolio of a run."""
    z = NormalDist().inv_cdf(0.5 + metadata.interval_level / 2)
    errors = _total_errors(metadata)
    totals = []
    for months in horizons:
        total, variance = summary.horizons[months]
        half = math.hypot(z * math.sqrt(variance), abs(errors.get(months, 0.0)) * abs(total))
        totals.append(
            {"months": months, "total": round(total, 2), "low": round(total - half, 2), "high": round(total + half, 2)}
        )
    kinds = sorted(summary.segments, key=SEGMENTS.index)
    segments = {kind: [_segment(name, sums) for name, sums in sorted(summary.segments[kind].items())] for kind in kinds}
    return Portfolio.model_validate(
        {
            "run": run,
            "scored_at": dt.datetime.now(dt.UTC).replace(microsecond=0),
            "model_version": metadata.version,
            "as_of": as_of,
            "data_dir": data_dir,
            "data_fingerprint": fingerprint,
            "headline_months": horizons[0],
            "interval_level": metadata.interval_level,
            "customers": summary.customers,
            "horizons": totals,
            "interval_method": INTERVAL_METHOD,
            "value_at_risk": round(summary.value_at_risk, 2),
            "deciles": deciles(summary.bins),
            "segments": segments,
            "at_risk": summary.at_risk,
        }
    )


def _total_errors(metadata: ModelMetadata) -> dict[int, float]:
    """The model's relative error on a whole set of held-out customers, by horizon: judged, its total error; past
    the data, its error against the oracle when the card has one, else the horizon it was extrapolated from."""
    errors = {metadata.horizon_months: metadata.metrics.model.total_error or 0.0}
    for h in metadata.horizons:
        if h.judged and h.model is not None:
            errors[h.months] = h.model.total_error or 0.0
    for h in metadata.horizons:
        if not h.judged:
            oracle = h.against_oracle.total_error if h.against_oracle is not None else None
            errors[h.months] = oracle if oracle is not None else errors.get(h.extrapolated_from, 0.0)
    return errors


def _segment(name: str, sums: list[float]) -> dict:
    customers, value, at_risk, churn_sum, churn_known = sums
    rate = round(churn_sum / churn_known, 4) if churn_known else None
    return {
        "segment": name,
        "customers": int(customers),
        "value": round(value, 2),
        "value_at_risk": round(at_risk, 2),
        "churn_rate": rate,
        "mean_clv": round(value / customers, 2) if customers else 0.0,
    }


def deciles(bins: dict[int, list[float]]) -> list[dict]:
    """Tenths of the customers by headline value, highest first, from the merged histogram: exact counts; a bin
    that a decile boundary cuts is split by count, so that a decile's value is within the bin's 1% of exact."""
    keys = sorted(bins, reverse=True)
    n = int(sum(bins[k][0] for k in keys))
    total = sum(bins[k][1] for k in keys)
    bounds = [0, *(round(n * d / 10) for d in range(1, 11))]
    out = [{"customers": 0, "value": 0.0, "keys": []} for _ in range(10)]
    before = 0  # customers in the bins above this one
    for key in keys:
        count, value = int(bins[key][0]), bins[key][1]
        for d, part in enumerate(out):
            overlap = min(before + count, bounds[d + 1]) - max(before, bounds[d])
            if overlap > 0:
                part["customers"] += overlap
                part["value"] += value * overlap / count
                part["keys"].append(key)
        before += count
    rows = []
    for d, part in enumerate(out, start=1):
        edges = [_bin_value(k) for k in part["keys"]] or [0.0]
        rows.append(
            {
                "decile": d,
                "customers": part["customers"],
                "value": round(part["value"], 2),
                "share": round(part["value"] / total, 6) if total else None,
                "low_clv": round(min(edges), 2),
                "high_clv": round(max(edges), 2),
            }
        )
    return rows


def _bin_value(key: int) -> float:
    return float(np.sign(key) * np.expm1(abs(key) * STEP))
