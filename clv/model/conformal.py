"""Conformalized quantile regression (Romano, Patterson and Candès, 2019): a quantile band fitted on some
customers is widened by a margin measured on others held back, so that the interval covers its nominal
share of new customers whatever the band's own errors."""

from __future__ import annotations

import numpy as np


def held_back(n_samples: int, groups, share: float, seed: int | None) -> np.ndarray:
    """Rows of the customers held back to calibrate (a `share` of the `groups`, each row its own group
    when None), drawn with `seed`."""
    groups = np.arange(n_samples) if groups is None else np.asarray(groups)
    if len(groups) != n_samples:
        raise ValueError(f"Found input variables with inconsistent numbers of samples: [{n_samples}, {len(groups)}]")
    unique = np.unique(groups)
    held = round(share * unique.size)
    if not 0 < held < unique.size:
        raise ValueError(
            f"n_samples={n_samples} in {unique.size} groups is too few: calibration_share="
            f"{share} holds back {held} of them, and the interval needs at least one "
            "group to calibrate on and one to fit on"
        )
    chosen = np.random.default_rng(seed).choice(unique, held, replace=False)
    return np.isin(groups, chosen)


def margin(y: np.ndarray, low: np.ndarray, high: np.ndarray, level: float) -> float:
    """The margin that, added to each side of the band, covers `level` of the held-back labels: the
    finite-sample corrected quantile of the conformity scores max(low - y, y - high)."""
    scores = np.maximum(low - y, y - high)
    rank = min(1.0, np.ceil((scores.size + 1) * level) / scores.size)
    return float(np.quantile(scores, rank, method="higher"))


def widen(point: np.ndarray, low: np.ndarray, high: np.ndarray, by) -> tuple[np.ndarray, np.ndarray]:
    """The band the margin was calibrated on (the quantile band stretched to hold the point), widened `by`."""
    return np.minimum(low, point) - by, np.maximum(high, point) + by
