"""BankingCLVModel: gradient boosting on the feature rows, fitted here; its 80% interval is calibrated by
clv.model.conformal and its drivers are computed by clv.model.attributions.

It lives in clv/ (and model.py re-exports it) because a class pickled from a script run as
`__main__` cannot be loaded by the API.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.utils import Tags
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from clv.data.defaults import INTERVAL_LEVEL
from clv.model import conformal
from clv.model.attributions import rescale, top_drivers
from clv.model.fitting import (
    TARGETS,
    Fit,
    band_rows,
    fit_together,
    learnable,
    ledger_columns,
    platt,
    resolve_target,
)
from clv.model.lifetime import Lifetime
from clv.model.trees import MAX_DEPTH, CompiledForest

# the churn classifier's own shape: a rarer, noisier label than the value wants shallower trees, larger leaves and
# fewer of them (on the generated bank's held-out customers: AUC 0.659 against 0.649, Brier skill 0.047 against
# 0.040, for the value's shape; in half the fitting time)
CHURN_BOOSTER = {"n_estimators": 100, "learning_rate": 0.05, "max_depth": 3, "min_samples_leaf": 50}


def _signed_log(y: np.ndarray) -> np.ndarray:
    return np.sign(y) * np.log1p(np.abs(y))


def _signed_exp(z: np.ndarray) -> np.ndarray:
    return np.sign(z) * np.expm1(np.abs(z))


class BankingCLVModel(RegressorMixin, BaseEstimator):
    """Predicts the discounted net margin of the next months from a feature row (clv.model.features).

    Parameters
    ----------
    target : how the zero-heavy, heavy-tailed target is fitted: "squared_error" (the mean directly),
        "log" (signed log1p, back-transformed), "two_part" (P(value != 0) x E[value | value != 0]), or
        "auto": two_part when at least 10% of the labels are zero, else squared_error (what won on
        held-out Gini and decile MAPE on the synthetic bank and on a transactions-only log).
    max_depth : levels of each value tree, 1 to 12: the compiled walk pads every tree to the deepest one's
        2^depth leaves (clv.model.trees).
    interval_level : nominal coverage of `predict_interval` (conformalized quantile regression).
    calibration_share : share of customers (`groups` in fit) held back to calibrate the interval.
    max_band_customers : customers (`groups` in fit) the quantile boosters and the churn classifier learn from at
        most, a seeded sample of those not held back; None: all of them. The point model learns from every one: its
        calibration gains from a large sample, and the band is conformalized and the churn probability
        Platt-scaled on the held-back customers whatever they learned from, at a fraction of the fitting time.
    ledger_features : names of the columns of X that come from the profit ledger. When given, fit needs
        a DataFrame, also learns from copies of the rows without them (so a customer scored without a
        ledger, an API request, gets a fitted answer) and calibrates the interval apart for such rows.
    lifetime : how the value and the churn probability extend to longer horizons and a monthly curve
        (clv.model.lifetime.Lifetime, fitted on held-out customers' realized outcomes by training); None: the
        headline horizon only. A parameter, not something fit learns from X and y, so that
        `clone(model).fit(X, y, ...)` on the same rows rebuilds the same model, horizons included.

    Attributes
    ----------
    n_features_in_, feature_names_in_ : the columns seen in fit (names only when X had them).
    ledger_columns_ : positions of `ledger_features` in X.
    target_ : the target fitted ("auto" resolved).
    margin_ : conformal margin added to each side of the quantile band: {"ledger", "no_ledger"} with
        ledger features, else {"all"}.
    churn_ : the classifier of the churn label given to fit (None without one); its probability is
        calibrated on the held-back customers (Platt scaling: a logistic regression on the classifier's raw
        output), apart for rows with and without a ledger as the interval is: `churn_calibration_`,
        {group: (slope, intercept)}.
    lifetime_ : the `lifetime` in force (read-only: `set_params(lifetime=...)` on a fitted model refits no tree,
        so training sets it once it has measured the longer horizons on the fitted model's answers).
    """

    def __init__(
        self,
        target: str = "auto",
        n_estimators: int = 200,
        learning_rate: float = 0.08,
        max_depth: int = 4,
        min_samples_leaf: int = 20,
        subsample: float = 0.5,
        max_features: float = 0.3,
        interval_level: float = INTERVAL_LEVEL,
        calibration_share: float = 0.25,
        max_band_customers: int | None = None,
        ledger_features: tuple[str, ...] = (),
        lifetime: Lifetime | None = None,
        random_state: int | None = 42,
    ) -> None:
        self.target = target
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.subsample = subsample
        self.max_features = max_features
        self.interval_level = interval_level
        self.calibration_share = calibration_share
        self.max_band_customers = max_band_customers
        self.ledger_features = ledger_features
        self.lifetime = lifetime
        self.random_state = random_state

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        # a missing feature is information here (no ledger, no card): the fitted imputer fills it and
        # adds an indicator column, so NaN in X is valid input (inf is still refused)
        tags.input_tags.allow_nan = True
        return tags

    # ---- fit --------------------------------------------------------------------------------------

    def fit(self, X, y, groups=None, churned=None) -> BankingCLVModel:
        """Fit on rows X (a DataFrame when `ledger_features` is set) and labels y; `groups` (customer ids)
        keeps a customer's rows together when a share of customers is held back to calibrate the interval.
        `churned` (1 left, 0 stayed, NaN for a row that cannot leave) adds the churn probability."""
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if not (isinstance(self.max_depth, int) and 1 <= self.max_depth <= MAX_DEPTH):
            raise ValueError(f"max_depth must be a whole number from 1 to {MAX_DEPTH}, got {self.max_depth!r}")
        churn = None if churned is None else np.asarray(churned, np.float64)
        if churn is not None and churn.shape != (len(y),):
            raise ValueError(f"churned has shape {churn.shape}; it needs one label per row of X, ({len(y)},)")
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_all_finite="allow-nan", y_numeric=True)
        self.ledger_columns_ = ledger_columns(self.ledger_features, getattr(self, "feature_names_in_", None))
        calibrate = conformal.held_back(X.shape[0], groups, self.calibration_share, self.random_state)
        churn = None if churn is None else learnable(churn, calibrate)
        self.target_ = resolve_target(self.target, y)
        band = band_rows(groups, calibrate, self.max_band_customers, self.random_state)
        if self.ledger_columns_.size and not np.isnan(X[:, self.ledger_columns_]).all():
            X_fit, y_fit, band_fit = np.vstack([X, self._mask(X)]), np.tile(y, 2), np.tile(band, 2)
            churn_fit = None if churn is None else np.tile(churn, 2)
        else:  # no ledger named, or none in the data: the copies would be the rows themselves
            X_fit, y_fit, band_fit, churn_fit = X, y, band, churn
        self.imputer_ = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True).fit(X_fit)
        alpha = (1 - self.interval_level) / 2
        proper, y_proper = X_fit[band_fit], y_fit[band_fit]
        fits = {  # each booster with the rows and labels it learns from
            **self._point_fits(X_fit, y_fit),
            "low": Fit(self._booster(loss="quantile", alpha=alpha), proper, y_proper),
            "high": Fit(self._booster(loss="quantile", alpha=1 - alpha), proper, y_proper),
        }
        if churn_fit is not None:
            fits["churn"] = self._churn_fit(proper, churn_fit[band_fit])
        fitted = fit_together(fits, self._pipeline)
        self.point_, self.size_ = fitted["point"], fitted.get("size")
        self.quantiles_ = (fitted["low"], fitted["high"])
        self.churn_ = fitted.get("churn")
        self.scale_ = float(max(np.median(np.abs(y)), 1.0))
        self.churn_calibration_ = None
        self._compile()
        self.margin_ = self._conformal_margins(X[calibrate], y[calibrate])
        if self.churn_ is not None:
            self.churn_calibration_ = platt(self.forest_, self._kinds(X[calibrate]), churn[calibrate])
        return self

    def _booster(self, kind: type = GradientBoostingRegressor, **loss: object) -> GradientBoostingRegressor:
        return kind(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            subsample=self.subsample,
            max_features=self.max_features,
            random_state=self.random_state,
            **loss,
        )

    def _pipeline(
        self, model: GradientBoostingRegressor | GradientBoostingClassifier, rows: np.ndarray, y: np.ndarray
    ) -> Pipeline:
        """Fit `model` on the imputed rows; the pipeline shares the one fitted imputer. scikit-learn casts the rows to
        float32 for its trees and its splitter reads a column at a time: given them so, column-major, the same trees
        fit 1.17x as fast at 155,000 rows (30 trees: 8.3 s against 9.7 s)."""
        model.fit(np.asfortranarray(self.imputer_.transform(rows), dtype=np.float32), y)
        return Pipeline([("impute", self.imputer_), ("model", model)])

    def _point_fits(self, X: np.ndarray, y: np.ndarray) -> dict[str, Fit]:
        """The point model's booster with its rows and labels, and for the two-part target the size model's."""
        if self.target_ == "squared_error":
            return {"point": Fit(self._booster(), X, y)}
        if self.target_ == "log":
            return {"point": Fit(self._booster(), X, _signed_log(y))}
        nonzero = y != 0
        return {
            "point": Fit(self._booster(GradientBoostingClassifier), X, nonzero),
            "size": Fit(self._booster(), X[nonzero], y[nonzero]),
        }

    def _churn_fit(self, X: np.ndarray, churned: np.ndarray) -> Fit:
        known = ~np.isnan(churned)
        classifier = GradientBoostingClassifier(
            **CHURN_BOOSTER, subsample=self.subsample, max_features=self.max_features, random_state=self.random_state
        )
        return Fit(classifier, X[known], churned[known] == 1)

    def _kinds(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """The held-back rows as each kind of row the calibrations are apart for: with their ledger and without it
        (masked), or all alike for a model fitted without a ledger."""
        return {"ledger": X, "no_ledger": self._mask(X)} if self.ledger_columns_.size else {"all": X}

    def _conformal_margins(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """CQR (Romano et al. 2019) on the held-back rows, apart for rows with and without a ledger."""
        margin = {}
        for name, part in self._kinds(X).items():
            _, lo, hi, _, _ = self._outputs(part, contributions=False, calibrated=False)
            margin[name] = conformal.margin(y, lo, hi, self.interval_level)
        return margin

    def _compile(self) -> None:
        ensembles = [self.point_[-1], self.quantiles_[0][-1], self.quantiles_[1][-1]]
        attribute = 0
        if self.target_ == "two_part":
            ensembles.append(self.size_[-1])
            attribute = 3
        if self.churn_ is not None:  # the last column of the raw outputs
            ensembles.append(self.churn_[-1])
        self.forest_ = CompiledForest(self.imputer_, ensembles, self.n_features_in_, attribute)

    def __getstate__(self) -> dict:
        # pickled only between this code's own processes (Dask sends the model to its workers); a saved model is
        # arrays and JSON (clv.model.persistence). The compiled forest is derived from the fitted boosters: rebuilt
        # on arrival where they are here, kept where they are not (a loaded model predicts from the forest alone).
        # A copy: on Python 3.11+ object.__getstate__ returns the live __dict__, and popping from it would strip
        # the forest from the model being sent
        state = dict(super().__getstate__())
        if "point_" in state:
            state.pop("forest_", None)
        return state

    def __setstate__(self, state: dict) -> None:
        # a model saved before churn or horizons had none; one saved before `lifetime` was a parameter kept it fitted
        state = {"churn_": None, "churn_calibration_": None, "lifetime": state.pop("lifetime_", None), **state}
        super().__setstate__(state)
        if "point_" in state:
            self._compile()

    # ---- predict ----------------------------------------------------------------------------------

    def _validated(self, X) -> np.ndarray:
        """X as float64 rows of the fitted width and names: the one check per public call."""
        check_is_fitted(self)
        names = getattr(self, "feature_names_in_", None)
        if names is not None and isinstance(X, pd.DataFrame) and list(X.columns) == list(names):
            # the columns fit saw, in its order: scikit-learn's array checks on the values, without its
            # per-column DataFrame inspection (half a millisecond a call, which a served request would pay)
            values = X.to_numpy()
            if values.dtype == np.float64:
                return check_array(values, ensure_all_finite="allow-nan")
        return validate_data(self, X, reset=False, dtype=np.float64, ensure_all_finite="allow-nan")

    def _mask(self, X: np.ndarray) -> np.ndarray:
        masked = X.copy()
        masked[:, self.ledger_columns_] = np.nan
        return masked

    def _outputs(
        self, X: np.ndarray, contributions: bool = True, calibrated: bool = True, point_only: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """Point, interval low and high, per-feature contributions to the point, and the churn probability (NaN
        without a churn model, or before its calibration), for validated rows X. `point_only` walks the point's
        trees alone (the rest is NaN): what `predict` needs, and permutation importance calls it many times."""
        forest = self.forest_
        ensembles = None
        if point_only:  # the point's booster; the two-part target's size model too, the ensemble after the interval
            contributions, ensembles = False, (0,) if self.target_ in ("squared_error", "log") else (0, 3)
        raw, contrib = forest.evaluate(X, contributions, ensembles)
        if self.target_ == "squared_error":
            point = raw[:, 0]
        elif self.target_ == "log":
            point = _signed_exp(raw[:, 0])
            if contrib is not None:
                contrib = rescale(contrib, forest.bias, raw[:, 0], _signed_exp(forest.bias), point)
        else:
            p = 1 / (1 + np.exp(-raw[:, 0]))
            point = p * raw[:, 3]
            if contrib is not None:
                contrib = rescale(contrib, forest.bias, raw[:, 3], forest.bias, point)
        lo, hi = np.minimum(raw[:, 1], raw[:, 2]), np.maximum(raw[:, 1], raw[:, 2])
        has_ledger = self._has_ledger(X)
        churn = np.full(X.shape[0], np.nan)
        if calibrated:
            if has_ledger is not None:
                margin = np.where(has_ledger, self.margin_["ledger"], self.margin_["no_ledger"])
            else:
                margin = self.margin_["all"]
            lo, hi = conformal.widen(point, lo, hi, margin)
        if calibrated and self.churn_calibration_ is not None:
            calibration = self.churn_calibration_
            if has_ledger is None:
                slope, intercept = calibration["all"]
            else:
                ledger, no_ledger = calibration["ledger"], calibration["no_ledger"]
                slope = np.where(has_ledger, ledger[0], no_ledger[0])
                intercept = np.where(has_ledger, ledger[1], no_ledger[1])
            churn = 1 / (1 + np.exp(-(slope * raw[:, -1] + intercept)))
        return point, np.minimum(lo, point), np.maximum(hi, point), contrib, churn

    def _has_ledger(self, X: np.ndarray) -> np.ndarray | None:
        """Which rows carry ledger features (None for a model fitted without any): they have their own margins."""
        return ~np.isnan(X[:, self.ledger_columns_]).all(axis=1) if self.ledger_columns_.size else None

    def predict(self, X) -> np.ndarray:
        return self._outputs(self._validated(X), contributions=False, point_only=True)[0]

    def predict_interval(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Low and high ends of the `interval_level` prediction interval."""
        _, lo, hi, _, _ = self._outputs(self._validated(X), contributions=False)
        return lo, hi

    def predict_churn(self, X) -> np.ndarray:
        """The calibrated probability of leaving within the churn label's months (NaN without a churn model)."""
        return self._outputs(self._validated(X), contributions=False)[4]

    def predict_all(self, X, contributions: bool = True, check_input: bool = True) -> dict[str, np.ndarray | None]:
        """Everything a served prediction needs in one pass: point, interval, confidence, contributions, churn, and
        the value of every horizon with its interval ({months: (value, low, high)}; None without `lifetime_`).

        `check_input=False` skips scikit-learn's input checks (as its trees' `predict` allows) for rows the
        caller built itself in the fitted columns' order; a served request would otherwise spend more time
        in the checks than in the trees. Only the width is checked, and the fit by its last attribute (scikit-learn's
        own check, which costs more than some of the trees, only when that is missing)."""
        if check_input:
            X = self._validated(X)
        else:
            if not hasattr(self, "forest_"):
                check_is_fitted(self)
            X = np.asarray(X, dtype=np.float64)
            if X.ndim != 2 or X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has shape {X.shape}, but {type(self).__name__} expects {self.n_features_in_} columns"
                )
        point, lo, hi, contrib, churn = self._outputs(X, contributions)
        confidence = self.confidence(point, lo, hi)
        horizons = None
        if self.lifetime is not None:  # lifetime_ without its check: the fit was checked above
            horizons = self.lifetime.values(point, lo, hi, churn, self._has_ledger(X))
        return {
            "point": point,
            "low": lo,
            "high": hi,
            "confidence": confidence,
            "contrib": contrib,
            "churn": churn,
            "horizons": horizons,
        }

    def confidence(self, point: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """1 / (1 + interval width / max(|prediction|, scale)): 1 for a point, 0.5 when the width equals
        the prediction; `scale`, the median absolute training label, keeps values near zero meaningful."""
        return 1.0 / (1.0 + (high - low) / np.maximum(np.abs(point), self.scale_))

    def explain(self, X, top: int = 5) -> list[list[dict[str, float | str | None]]]:
        """Per row, the `top` features that move its prediction most from the average (bias), signed."""
        X = self._validated(X)
        contrib = self._outputs(X, calibrated=False)[3]
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            names = [f"x{j}" for j in range(self.n_features_in_)]
        return [top_drivers(X[i], contrib[i], top, names) for i in range(X.shape[0])]

    def without_ledger(self, X):
        """X (an array, or a DataFrame with its columns and index) with the fitted ledger columns missing:
        the rows as a caller without a profit ledger sends them (the API's request)."""
        check_is_fitted(self)
        if not hasattr(X, "columns"):
            return self._mask(np.array(X, dtype=np.float64))
        ledger = [str(self.feature_names_in_[j]) for j in self.ledger_columns_]  # fitted by name, so named
        missing = [name for name in ledger if name not in X.columns]
        if missing:
            raise ValueError(f"X lacks the ledger columns {missing} the model was fitted with")
        return X.assign(**dict.fromkeys(ledger, np.nan))

    @property
    def lifetime_(self) -> Lifetime | None:
        check_is_fitted(self)
        return self.lifetime

    @property
    def expected_value_(self) -> float:
        """The bias of the attributions: prediction = expected_value_ + sum of contributions."""
        bias = float(self.forest_.bias)
        # the log target's attributions are rescaled around the back-transformed bias (see _outputs)
        return float(_signed_exp(bias)) if self.target_ == "log" else bias
