"""A fitted BankingCLVModel as numpy arrays and JSON, and back: what a saved model is, so that reading one runs no code.

The arrays are the compiled forest's nodes (clv.model.trees), which are all that predicting, the interval, the churn
probability and the drivers walk; the JSON holds the hyperparameters (the lifetime among them) and the few fitted
numbers beside the trees. scikit-learn's fitted boosters are fit-time objects: a loaded model predicts from the
forest alone, to the bit, and `clone(model).fit(...)` rebuilds them from the hyperparameters.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from clv.model.estimator import BankingCLVModel
from clv.model.fitting import TARGETS
from clv.model.lifetime import Lifetime
from clv.model.trees import CompiledForest

Param = str | int | float | list[str] | None


class SavedEstimator(BaseModel):
    """model.json: everything of a fitted model but the forest's arrays."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Param]  # get_params() but `lifetime`; a tuple is saved as a list
    lifetime: Lifetime | None
    n_features_in_: int
    feature_names_in_: list[str] | None
    ledger_columns_: list[int]
    target_: str
    scale_: float
    margin_: dict[str, float]
    churn_calibration_: dict[str, tuple[float, float]] | None
    attribute: int  # the ensemble the drivers attribute (the value's; the size model's for the two-part target)


def to_parts(model: BankingCLVModel) -> tuple[SavedEstimator, dict[str, np.ndarray]]:
    """The JSON document and the arrays of a fitted (or loaded) model."""
    params: dict[str, Any] = model.get_params(deep=False)
    lifetime = params.pop("lifetime")
    params = {name: list(value) if isinstance(value, tuple) else value for name, value in params.items()}
    names = getattr(model, "feature_names_in_", None)
    document = SavedEstimator(
        params=params,
        lifetime=lifetime,
        n_features_in_=model.n_features_in_,
        feature_names_in_=None if names is None else [str(name) for name in names],
        ledger_columns_=[int(j) for j in model.ledger_columns_],
        target_=model.target_,
        scale_=model.scale_,
        margin_=model.margin_,
        churn_calibration_=model.churn_calibration_,
        attribute=model.forest_.attribute,
    )
    return document, model.forest_.to_arrays()


def from_parts(document: SavedEstimator, arrays: dict[str, np.ndarray]) -> BankingCLVModel:
    """The model `to_parts` described; ValueError or TypeError when the parts do not fit together."""
    params = {name: tuple(value) if isinstance(value, list) else value for name, value in document.params.items()}
    model = BankingCLVModel(**params, lifetime=document.lifetime)
    model.n_features_in_ = document.n_features_in_
    if document.feature_names_in_ is not None:
        if len(document.feature_names_in_) != document.n_features_in_:
            raise ValueError(f"{len(document.feature_names_in_)} feature names for {document.n_features_in_} features")
        model.feature_names_in_ = np.array(document.feature_names_in_, dtype=object)
    model.ledger_columns_ = np.array(document.ledger_columns_, np.intp)
    if not np.isin(model.ledger_columns_, np.arange(model.n_features_in_)).all():
        raise ValueError(f"ledger columns {document.ledger_columns_} outside the {document.n_features_in_} features")
    groups = {"ledger", "no_ledger"} if model.ledger_columns_.size else {"all"}
    for name, fitted in (("margin_", document.margin_), ("churn_calibration_", document.churn_calibration_)):
        if fitted is not None and set(fitted) != groups:
            raise ValueError(f"{name} has the groups {sorted(fitted)}, the model's are {sorted(groups)}")
    if document.target_ not in TARGETS[1:]:
        raise ValueError(f"target_ {document.target_!r} is not one of {TARGETS[1:]}")
    ensembles = 3 + (document.target_ == "two_part") + (document.churn_calibration_ is not None)
    found = np.size(arrays.get("init", ()))
    if found != ensembles:
        raise ValueError(f"the forest has {found} ensembles, the model needs {ensembles}")
    model.target_ = document.target_
    model.scale_ = document.scale_
    model.margin_ = document.margin_
    model.churn_calibration_ = document.churn_calibration_
    model.forest_ = CompiledForest.from_arrays(arrays, document.n_features_in_, document.attribute)
    return model
