"""Per-customer drivers: the exact contributions of each feature to a tree ensemble's prediction
(clv.model.trees computes them), put back on the scale of the prediction and ranked."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def driver_order(contrib: np.ndarray, top: int) -> np.ndarray:
    """Per row of contributions, the columns of the `top` largest in size, largest first."""
    return np.argsort(-np.abs(contrib), axis=-1, kind="stable")[..., :top]


def top_drivers(
    x: np.ndarray, contrib: np.ndarray, top: int, names: Sequence[str]
) -> list[dict[str, float | str | None]]:
    """The `top` drivers of one row: feature name (`names[j]` for column j), its value, its contribution."""
    return [
        {
            "feature": str(names[j]),
            "value": None if np.isnan(x[j]) else float(x[j]),
            "contribution": round(float(contrib[j]), 2),
        }
        for j in driver_order(contrib, top)
    ]


def rescale(contrib: np.ndarray, raw_bias: float, raw: np.ndarray, bias: float, point: np.ndarray) -> np.ndarray:
    """Scale raw-space attributions so that bias + sum equals the back-transformed prediction."""
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(np.abs(raw - raw_bias) > 1e-12, (point - bias) / (raw - raw_bias), 0.0)
    return contrib * factor[:, None]
