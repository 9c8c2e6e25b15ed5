"""The choices BankingCLVModel's fit makes around its boosters: which target it fits, which columns are the ledger's,
which rows the band and the churn classifier learn from, whether the churn labels can be learned, how the boosters
share the cores, and the Platt scaling of the churn probability (clv.model.estimator fits; clv.model.conformal
calibrates the band)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, TypeVar

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression

from clv.model.trees import CompiledForest

TARGETS = ("auto", "squared_error", "log", "two_part")
ZERO_HEAVY = 0.10  # share of zero labels from which "auto" fits the two-part model


def resolve_target(target: str, y: np.ndarray) -> str:
    """The target fitted: "auto" is two_part when at least ZERO_HEAVY of the labels are zero, else squared_error."""
    zero = np.mean(y == 0)
    if target == "auto":
        return "two_part" if ZERO_HEAVY <= zero < 1 else "squared_error"
    if target == "two_part" and zero in (0, 1):
        raise ValueError(
            f"target='two_part' needs zero and non-zero labels; {zero:.0%} are zero (use 'auto' or 'squared_error')"
        )
    return target


def ledger_columns(ledger_features: Sequence[str], columns: Sequence[str] | None) -> np.ndarray:
    """Positions of `ledger_features` among the `columns` fit saw (None: X had no column names)."""
    if isinstance(ledger_features, str):
        raise TypeError(f"ledger_features must be a tuple of column names, got the string {ledger_features!r}")
    names = list(ledger_features)
    if not names:
        return np.zeros(0, np.intp)
    if columns is None:
        raise ValueError(
            f"ledger_features names {len(names)} columns, so fit needs X as a pandas DataFrame with string "
            "column names; got X without column names"
        )
    position = {name: j for j, name in enumerate(columns)}
    missing = [name for name in names if name not in position]
    if missing:
        raise ValueError(f"ledger_features not among the columns of X: {missing}")
    return np.array([position[name] for name in names], np.intp)


def band_rows(
    groups: np.ndarray | None, calibrate: np.ndarray, max_customers: int | None, seed: int | None
) -> np.ndarray:
    """Rows the quantile boosters and the churn classifier learn from: those not held back to calibrate, of at most
    `max_customers` customers (`groups`; a seeded sample)."""
    proper = ~calibrate
    if max_customers is None:
        return proper
    groups = np.arange(calibrate.size) if groups is None else np.asarray(groups)
    customers = np.unique(groups[proper])
    if customers.size <= max_customers:
        return proper
    chosen = np.random.default_rng(seed).choice(customers, max_customers, replace=False)
    return proper & np.isin(groups, chosen)


def learnable(churned: np.ndarray, calibrate: np.ndarray) -> np.ndarray | None:
    """The churn labels, or None (no churn probability, with a warning to fit's caller) when the rows fitted or the
    rows held back to calibrate lack customers who left or who stayed: a small bank, or one where nobody left."""
    for name, part in (("fitted", churned[~calibrate]), ("held back", churned[calibrate])):
        known = part[~np.isnan(part)]
        if np.unique(known).size < 2:
            message = f"no churn probability: the {known.size} churn labels of the rows {name} are all alike"
            warnings.warn(f"{message}; they need customers who left and customers who stayed", stacklevel=3)
            return None
    return churned


class Fit(NamedTuple):
    """A booster to fit, with the rows and labels it learns from."""

    booster: GradientBoostingRegressor | GradientBoostingClassifier
    rows: np.ndarray
    labels: np.ndarray

    @property
    def work(self) -> float:
        """Its fitting work, estimated by rows x trees x depth (a tree of unbounded depth as log2 of its rows)."""
        rows = self.rows.shape[0]
        return rows * self.booster.n_estimators * (self.booster.max_depth or np.log2(max(rows, 2)))


Fitted = TypeVar("Fitted")


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def fit_together(fits: dict[str, Fit], fit: Callable[..., Fitted]) -> dict[str, Fitted]:
    """`fit(booster, rows, labels)` of every Fit, on threads (scikit-learn builds trees without the GIL), largest first
    by its work. When the largest is at least all the others together, it has a core to itself and they share the
    rest: at ten million customers the point model learns from 155,000 rows against the band's 58,000, and on two
    cores the fit takes 56 s against 72 s all at once. Otherwise they share the cores on one thread more than there
    are, the smallest waiting for the first to finish: the default bank's fit in 9.3 to 9.7 s, against 9.8 to 10.1 s
    on a thread each and 10.3 to 10.9 s with a core to the point model."""
    work = {name: one.work for name, one in fits.items()}
    cores, largest = _cores(), max(work.values())
    threads = min(cores if 2 * largest >= sum(work.values()) else cores + 1, len(fits))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = {name: pool.submit(fit, *fits[name]) for name in sorted(fits, key=work.get, reverse=True)}
    return {name: future.result() for name, future in futures.items()}


def platt(forest: CompiledForest, rows: dict[str, np.ndarray], churned: np.ndarray) -> dict[str, tuple[float, float]]:
    """Platt scaling of the churn classifier's raw output (the forest's last) on the held-back rows, apart for each
    kind of row (with and without a ledger): {kind: (slope, intercept)}. (Isotonic regression, tried on the generated
    bank, gave a worse Brier score and put a few customers at exactly 1: a step function over a few thousand rows.)"""
    known = ~np.isnan(churned)
    calibration = {}
    for name, part in rows.items():
        raw = forest.evaluate(part[known], contributions=False)[0][:, -1:]
        fitted = LogisticRegression(C=1e6).fit(raw, churned[known] == 1)  # next to no penalty: 2 parameters
        calibration[name] = (float(fitted.coef_[0, 0]), float(fitted.intercept_[0]))
    return calibration
