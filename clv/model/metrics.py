"""The metrics of docs/metrics.md, reported together: ranking, calibration by decile, totals and errors."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

CALIBRATION_BINS = 10


def _gini(actual: np.ndarray, order_by: np.ndarray) -> float:
    order = np.lexsort((np.arange(actual.size), -order_by))  # ties keep their original order
    ranked = actual[order]
    total = ranked.sum()
    if total == 0:
        return 0.0
    n = actual.size
    return float(np.cumsum(ranked).sum() / total / n - (n + 1) / (2 * n))


def normalized_gini(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Gini of actual values ordered by prediction over Gini ordered by themselves: 1 perfect, 0 random."""
    actual, predicted = np.asarray(actual, np.float64), np.asarray(predicted, np.float64)
    best = _gini(actual, actual)
    return _gini(actual, predicted) / best if best else 0.0


def decile_table(actual: np.ndarray, predicted: np.ndarray, groups: int = 10) -> list[dict[str, float]]:
    """Customers sorted by prediction into equal groups: mean predicted and mean actual of each."""
    order = np.argsort(predicted, kind="stable")
    return [
        {
            "decile": i + 1,
            "customers": int(part.size),
            "mean_predicted": float(predicted[part].mean()),
            "mean_actual": float(actual[part].mean()),
        }
        for i, part in enumerate(np.array_split(order, groups))
        if part.size
    ]


def decile_mape(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Mean over deciles of |mean predicted - mean actual| / |mean actual|. A decile whose mean actual is
    (near) zero, as in zero-heavy data, is divided by 1% of the mean absolute value instead of ~0."""
    actual = np.asarray(actual, np.float64)
    rows = decile_table(actual, np.asarray(predicted, np.float64))
    floor = max(0.01 * float(np.abs(actual).mean()), 1e-9)
    errors = [abs(r["mean_predicted"] - r["mean_actual"]) / max(abs(r["mean_actual"]), floor) for r in rows]
    return float(np.mean(errors))


def report(
    actual: np.ndarray, predicted: np.ndarray, low: np.ndarray | None = None, high: np.ndarray | None = None
) -> dict:
    actual, predicted = np.asarray(actual, np.float64), np.asarray(predicted, np.float64)
    error = predicted - actual
    variance = ((actual - actual.mean()) ** 2).sum()
    rho = spearmanr(actual, predicted).statistic if np.ptp(predicted) > 0 else 0.0
    out = {
        "normalized_gini": normalized_gini(actual, predicted),
        "spearman": float(rho),
        "decile_mape": decile_mape(actual, predicted),
        "total_error": float(predicted.sum() / actual.sum() - 1) if actual.sum() else float("nan"),
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "r2": float(1 - (error**2).sum() / variance) if variance else float("nan"),
    }
    if low is not None and high is not None:
        out["interval_coverage"] = float(((actual >= low) & (actual <= high)).mean())
    return out


def reliability(churned: np.ndarray, probability: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict]:
    """The probabilities in `bins` equal-width bins over [0, 1]: customers, mean predicted, share that churned."""
    which = np.minimum((probability * bins).astype(np.int64), bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append(
                {
                    "bin": b + 1,
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "customers": int(inside.sum()),
                    "mean_predicted": float(probability[inside].mean()),
                    "churn_rate": float(churned[inside].mean()),
                }
            )
    return rows


def churn_report(churned: np.ndarray, probability: np.ndarray) -> dict:
    """How good a churn probability is (docs/metrics.md): Brier score, its skill against the base rate, AUC for
    the ranking, the expected calibration error over 10 bins, and the reliability table behind it."""
    churned, probability = np.asarray(churned, np.float64), np.asarray(probability, np.float64)
    base = float(churned.mean())
    brier = float(((probability - churned) ** 2).mean())
    base_brier = base * (1 - base)
    table = reliability(churned, probability)
    ece = sum(row["customers"] * abs(row["mean_predicted"] - row["churn_rate"]) for row in table) / churned.size
    return {
        "customers": int(churned.size),
        "base_rate": base,
        "brier": brier,
        "brier_skill": 1 - brier / base_brier if base_brier else float("nan"),
        "auc": float(roc_auc_score(churned, probability)) if 0 < base < 1 else float("nan"),
        "ece": float(ece),
        "reliability": table,
    }
