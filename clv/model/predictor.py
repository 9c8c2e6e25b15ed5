"""The typed prediction core: feature rows in, everything a prediction carries out (value, interval, confidence,
churn probability, every horizon, the monthly curve, the drivers), with the rule for a customer who has already
left. Batch scoring and the service both call it; neither knows how the other answers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from clv.model.attributions import driver_order
from clv.model.estimator import BankingCLVModel

Band = tuple[np.ndarray, np.ndarray, np.ndarray]  # value, interval low, interval high


class NoCurve(ValueError):
    """A curve asked of a model trained before horizons."""


@dataclass(frozen=True)
class Curve:
    """Month by month to the longest horizon; rows are customers, columns months 1..longest."""

    month: np.ndarray
    survival: np.ndarray
    expected_margin: np.ndarray
    cumulative_clv: np.ndarray


@dataclass(frozen=True)
class Predictions:
    """The answer for n feature rows, as arrays of n (drivers: n x features).

    A customer who had closed every product by the as-of date brings nothing after it (docs/domain.md): value,
    interval, horizons and drivers are 0, confidence 1, and the churn probability NaN (they cannot leave again);
    NaN churn also means a model trained without one."""

    value: np.ndarray
    low: np.ndarray
    high: np.ndarray
    confidence: np.ndarray
    churn: np.ndarray
    horizons: dict[int, Band]  # the headline first; the headline alone for a model trained before horizons
    contributions: np.ndarray | None  # per feature, to the value from the model's average (None: not asked)
    gone: np.ndarray
    curve: Curve | None = None  # only when asked

    def drivers(self, top: int) -> tuple[np.ndarray, np.ndarray]:
        """The positions of each row's `top` features by absolute contribution, and those contributions."""
        order = driver_order(self.contributions, top)
        return order, np.take_along_axis(self.contributions, order, axis=1)


@dataclass(frozen=True)
class Predictor:
    """A fitted model and the headline horizon it answers for (a model trained before horizons knows only that)."""

    model: BankingCLVModel
    horizon_months: int

    @property
    def horizons(self) -> tuple[int, ...]:
        """The horizons every prediction carries, the headline first."""
        lifetime = self.model.lifetime_
        return lifetime.horizons if lifetime is not None else (self.horizon_months,)

    @property
    def has_curve(self) -> bool:
        return self.model.lifetime_ is not None

    def predict(
        self,
        X: pd.DataFrame | np.ndarray,
        gone: np.ndarray | None = None,
        contributions: bool = True,
        curve: bool = False,
        check_input: bool = True,
    ) -> Predictions:
        """Predictions for feature rows X; `gone` marks the customers with no open product at their as-of date.

        `check_input=False` is for rows built by clv.model.features in FEATURE_NAMES' order, which a loaded
        model was verified to have: scikit-learn's checks would cost a served request more than its trees."""
        if curve and not self.has_curve:
            raise NoCurve("the model was trained before horizons and has no curve; train a new one")
        out = self.model.predict_all(X, contributions=contributions, check_input=check_input)
        gone = np.zeros(out["point"].shape[0], bool) if gone is None else np.asarray(gone, bool)
        value, low, high, churn, contrib = out["point"], out["low"], out["high"], out["churn"], out["contrib"]
        confidence = out["confidence"]
        horizons = out["horizons"] or {self.horizon_months: (value, low, high)}
        if gone.any():
            value, low, high = (np.where(gone, 0.0, values) for values in (value, low, high))
            confidence = np.where(gone, 1.0, confidence)
            churn = np.where(gone, np.nan, churn)
            if contrib is not None:
                contrib = np.where(gone[:, None], 0.0, contrib)
            horizons = {
                months: tuple(np.where(gone, 0.0, values) for values in band) for months, band in horizons.items()
            }
        return Predictions(
            value=value,
            low=low,
            high=high,
            confidence=confidence,
            churn=churn,
            horizons=horizons,
            contributions=contrib,
            gone=gone,
            curve=self._curve(out["point"], out["churn"], gone) if curve else None,
        )

    def _curve(self, point: np.ndarray, churn: np.ndarray, gone: np.ndarray) -> Curve:
        """The curve of the model's answer: a customer who had already gone has survival and margin 0."""
        curve = self.model.lifetime_.curve(point, churn)
        if gone.any():
            for name in ("survival", "expected_margin", "cumulative_clv"):
                curve[name] = np.where(gone[:, None], 0.0, curve[name])
        return Curve(**curve)
