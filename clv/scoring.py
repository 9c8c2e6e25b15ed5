"""Score a bank as of a date: one row per customer who had joined by then, with interval and drivers."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from clv import dates
from clv.bank import Bank
from clv.estimator import BankingCLVModel, driver_order
from clv.features import FEATURE_NAMES, build_features
from clv.labels import former, joined

TOP_DRIVERS = 3
GONE = "no open product"


def score_bank(model: BankingCLVModel, bank: Bank, as_of: dt.date | None = None) -> pd.DataFrame:
    """Predictions, 80% interval, confidence and the top drivers. Customers who had closed every product
    by the as-of date bring nothing after (docs/domain.md) and get 0 with driver 'no open product'."""
    day = bank.last_day() if as_of is None else dates.to_day(as_of)
    keep = joined(bank, day)
    out = predict_rows(model, build_features(bank, day)[keep], former(bank, day)[keep])
    frame = pd.DataFrame({
        "customer_id": bank.customer_id[keep],
        "predicted_clv": out["point"].round(2),
        "clv_low": out["low"].round(2),
        "clv_high": out["high"].round(2),
        "confidence_score": out["confidence"].round(4),
    })  # fmt: skip
    contrib = out["contrib"]
    top = driver_order(contrib, TOP_DRIVERS)
    names = np.asarray(FEATURE_NAMES, dtype=object)
    for k in range(TOP_DRIVERS):
        frame[f"driver_{k + 1}"] = np.where(out["gone"], GONE if k == 0 else "", names[top[:, k]])
        frame[f"driver_{k + 1}_contribution"] = np.take_along_axis(contrib, top[:, [k]], axis=1)[:, 0].round(2)
    return frame.sort_values("customer_id", kind="stable").reset_index(drop=True)


def predict_rows(model: BankingCLVModel, X: pd.DataFrame, gone: np.ndarray) -> dict[str, np.ndarray]:
    """The model's answer for feature rows; a customer with no open product gets exactly 0, no drivers."""
    out = model.predict_all(X)
    if gone.any():
        for key in ("point", "low", "high"):
            out[key] = np.where(gone, 0.0, out[key])
        out["confidence"] = np.where(gone, 1.0, out["confidence"])
        out["contrib"] = np.where(gone[:, None], 0.0, out["contrib"])
    out["gone"] = gone
    return out
