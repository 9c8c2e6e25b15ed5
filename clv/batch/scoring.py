"""Score a bank as of a date: one row per customer who had joined by then, with interval and drivers."""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clv.batch.portfolio import Summary, segment_labels, summarize
from clv.common import dates
from clv.common.cluster import Runner
from clv.common.io import atomic_folder, atomic_path
from clv.data.bank import Bank
from clv.data.layout import Source, part_name
from clv.model.features import FEATURE_NAMES, build_features
from clv.model.labels import former, joined
from clv.model.predictor import Curve, NoCurve, Predictor

TOP_DRIVERS = 3
HEAD = ("customer_id", "predicted_clv", "clv_low", "clv_high", "confidence_score", "churn_probability")
DRIVERS = tuple(f"driver_{k}{end}" for k in range(1, TOP_DRIVERS + 1) for end in ("", "_contribution"))
GONE = "no open product"


def columns(predictor: Predictor) -> tuple[str, ...]:
    """The columns of a scoring: the headline, then each longer horizon's value and interval (clv_36m, clv_36m_low,
    clv_36m_high, ...), then the drivers."""
    return (*HEAD, *(name for months in predictor.horizons[1:] for name in horizon_columns(months)), *DRIVERS)


def horizon_columns(months: int) -> tuple[str, str, str]:
    return f"clv_{months}m", f"clv_{months}m_low", f"clv_{months}m_high"


def score_bank(predictor: Predictor, bank: Bank, as_of: dt.date | None = None) -> pd.DataFrame:
    """Predictions, 80% interval, confidence, churn probability, the value of every horizon and the top drivers."""
    return scored(predictor, bank, as_of)[0]


@dataclass
class Scored:
    """What scoring a bank gives back to the client: the rows written and the portfolio's summed parts."""

    rows: int
    summary: Summary


def scored(
    predictor: Predictor, bank: Bank, as_of: dt.date | None = None, curve: bool = False, segments: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None]:
    """score_bank's frame; with `curve`, the month-by-month curve as long rows (customer_id, month, survival,
    expected_margin, cumulative_clv); with `segments`, each row's segments (clv.batch.portfolio). Customers who had
    closed every product by the as-of date get driver 'no open product' (the rest of their answer is the
    prediction core's: clv.model.predictor)."""
    day = bank.last_day() if as_of is None else dates.to_day(as_of)
    keep = joined(bank, day)
    out = predictor.predict(build_features(bank, day)[keep], former(bank, day)[keep], curve=curve, check_input=False)
    customers = bank.customer_id[keep]
    frame = pd.DataFrame(
        {
            "customer_id": customers,
            "predicted_clv": out.value.round(2),
            "clv_low": out.low.round(2),
            "clv_high": out.high.round(2),
            "confidence_score": out.confidence.round(4),
            "churn_probability": out.churn.round(4),
        }
    )
    for months in predictor.horizons[1:]:
        for name, values in zip(horizon_columns(months), out.horizons[months], strict=True):
            frame[name] = values.round(2)
    top, contributions = out.drivers(TOP_DRIVERS)
    names = np.asarray(FEATURE_NAMES, dtype=object)
    for k in range(TOP_DRIVERS):
        frame[f"driver_{k + 1}"] = np.where(out.gone, GONE if k == 0 else "", names[top[:, k]])
        frame[f"driver_{k + 1}_contribution"] = contributions[:, k].round(2)
    order = np.argsort(customers, kind="stable")
    frame = frame.iloc[order].reset_index(drop=True)
    labels = segment_labels(bank, day, np.flatnonzero(keep)[order]) if segments else None
    return frame, curve_rows(out.curve, customers, order) if curve else None, labels


def curve_rows(curve: Curve, customers: np.ndarray, order: np.ndarray) -> pd.DataFrame:
    """The month-by-month curve of scored rows, one row a customer and month, in `order`."""
    months = curve.month
    rounded = {"survival": 6, "expected_margin": 2, "cumulative_clv": 2}
    return pd.DataFrame(
        {
            "customer_id": np.repeat(customers[order], months.size),
            "month": np.tile(months, order.size).astype(np.int16),
            **{name: getattr(curve, name)[order].ravel().round(decimals) for name, decimals in rounded.items()},
        }
    )


def score_part(
    source: Source,
    part: str,
    predictor: Predictor,
    as_of: dt.date,
    folder: Path,
    suffix: str,
    curve_folder: Path | None = None,
) -> Scored:
    """Score one part of a bank into `folder/<part>.<suffix>` (Parquet or CSV without a header), and its curve into
    `curve_folder/<part>.parquet` when given; the rows, and the part's portfolio summary."""
    bank = source.load(part)[0]
    frame, curve, labels = scored(predictor, bank, as_of, curve=curve_folder is not None, segments=True)
    name = part or part_name(0)
    with atomic_path(folder / f"{name}.{suffix}") as tmp:
        if suffix == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False, header=False)
    if curve is not None:
        with atomic_path(curve_folder / f"{name}.parquet") as tmp:
            curve.to_parquet(tmp, index=False)
    return Scored(len(frame), summarize(frame, labels, predictor.horizons, predictor.model.interval_level))


def _total(parts: list[Scored]) -> Scored:
    summary = Summary()
    for part in parts:
        summary = summary.merge(part.summary)
    return Scored(sum(part.rows for part in parts), summary)


def write_scores(
    source: Source,
    runner: Runner,
    predictor: Predictor,
    as_of: dt.date | None,
    output: Path,
    curve: Path | None = None,
) -> Scored:
    """Score every part into `output`: a Parquet dataset (a folder of one file a part) when it ends in
    .parquet, else one CSV; and the monthly curve into the Parquet dataset `curve` when given. Each is written
    beside its final name under a temporary one and renamed when complete."""
    as_of = as_of or dates.from_day(source.last_day)
    if curve is not None and not predictor.has_curve:
        raise NoCurve("the model was trained before horizons and has no curve; train a new one")
    header = columns(predictor)
    with contextlib.ExitStack() as stack:
        curve_folder = None if curve is None else stack.enter_context(atomic_folder(curve))
        options = {"predictor": runner.share(predictor), "as_of": as_of, "curve_folder": curve_folder}
        if output.suffix == ".parquet":
            folder = stack.enter_context(atomic_folder(output))
            return _total(runner.map(score_part, source, label="scored", folder=folder, suffix="parquet", **options))
        output.parent.mkdir(parents=True, exist_ok=True)
        parts = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent)))
        rows = runner.map(score_part, source, label="scored", folder=parts, suffix="csv", **options)
        _concatenate(sorted(parts.glob("*.csv")), output, header)
        return _total(rows)


def _concatenate(parts: list[Path], output: Path, header: tuple[str, ...]) -> None:
    """The parts' rows under one header, as one file written whole or not at all."""
    with atomic_path(output) as tmp, tmp.open("wb") as out:
        out.write(f"{','.join(header)}\n".encode())
        for part in parts:
            with part.open("rb") as piece:
                shutil.copyfileobj(piece, out, 1 << 20)
