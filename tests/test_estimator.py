"""BankingCLVModel as a scikit-learn estimator: the common checks, named ledger columns, and drivers that add
up, on a small synthetic frame (no bank needed)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import check_dataframe_column_names_consistency, check_estimator

from clv.model import conformal
from clv.model.attributions import top_drivers
from clv.model.estimator import BankingCLVModel
from tests.conftest import ROOT

LEDGER = ("margin_12m", "fee_income_12m")
COLUMNS = ("age", "income", "tenure_months", "txn_count_90d", *LEDGER)
TARGETS = ("squared_error", "log", "two_part")
# small but able: check_regressors_train wants R² > 0.5 on its data from the fitted model
CHECKED = {"n_estimators": 20, "learning_rate": 0.2}


def synthetic(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Feature rows (two of them ledger columns, some incomes missing), zero-heavy labels, two rows a customer."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "age": rng.integers(18, 90, n).astype(float),
            "income": rng.lognormal(10, 0.5, n),
            "tenure_months": rng.integers(0, 240, n).astype(float),
            "txn_count_90d": rng.poisson(30, n).astype(float),
            "margin_12m": rng.normal(200, 150, n),
            "fee_income_12m": rng.gamma(2, 20, n),
        },
        index=pd.RangeIndex(1000, 1000 + n, name="row"),  # not 0..n-1: without_ledger must keep it
    )
    X.loc[rng.random(n) < 0.1, "income"] = np.nan
    y = 0.8 * X["margin_12m"] + 0.5 * X["fee_income_12m"] + 2 * X["txn_count_90d"] + rng.normal(0, 40, n)
    y = np.where(rng.random(n) < 0.25, 0.0, y.to_numpy())
    return X, y, np.repeat(np.arange(n // 2), 2)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    return synthetic()


@pytest.fixture(scope="module")
def models(data: tuple[pd.DataFrame, np.ndarray, np.ndarray]) -> dict[str, BankingCLVModel]:
    X, y, groups = data
    return {
        target: BankingCLVModel(target=target, n_estimators=30, min_samples_leaf=5, ledger_features=LEDGER).fit(
            X, y, groups=groups
        )
        for target in TARGETS
    }


@pytest.fixture(params=TARGETS)
def model(request: pytest.FixtureRequest, models: dict[str, BankingCLVModel]) -> BankingCLVModel:
    """Each fitted target in turn."""
    return models[request.param]


@pytest.fixture(scope="module")
def X(data: tuple[pd.DataFrame, np.ndarray, np.ndarray]) -> pd.DataFrame:
    return data[0]


@pytest.mark.parametrize("band", [None, 20], ids=["all at once", "the point model alone"])
def test_the_fit_on_threads_gives_the_point_model_scikit_learn_fits_alone(
    data: tuple[pd.DataFrame, np.ndarray, np.ndarray], band: int | None
) -> None:
    """However the fit shares its threads among the boosters (all at once; or, when the band learns from 20
    customers, the point model on a core of its own), and whatever layout it gives them the rows in, the point
    model is the one scikit-learn fits by itself on the imputed rows."""
    X, y, groups = data
    model = BankingCLVModel(target="squared_error", n_estimators=20, max_band_customers=band).fit(X, y, groups=groups)
    rows = model.imputer_.transform(X.to_numpy(np.float64))
    fitted = model.point_.named_steps["model"]
    alone = clone(fitted).fit(rows, y)
    assert np.array_equal(fitted.predict(rows), alone.predict(rows))
    for mine, theirs in zip(fitted.estimators_[:, 0], alone.estimators_[:, 0], strict=True):
        assert np.array_equal(mine.tree_.threshold, theirs.tree_.threshold)
        assert np.array_equal(mine.tree_.value, theirs.tree_.value)


def sklearn_point(model: BankingCLVModel, A: np.ndarray) -> np.ndarray:
    """The point prediction from the fitted scikit-learn pipelines themselves (fitted on arrays)."""
    if model.target_ == "squared_error":
        return model.point_.predict(A)
    if model.target_ == "log":
        z = model.point_.predict(A)
        return np.sign(z) * np.expm1(np.abs(z))
    return model.point_.predict_proba(A)[:, 1] * model.size_.predict(A)


# ---- scikit-learn's own checks --------------------------------------------------------------------


def test_passes_scikit_learns_estimator_checks() -> None:
    results = check_estimator(BankingCLVModel(**CHECKED), on_fail=None, on_skip=None)
    assert len(results) >= 50
    # check_array_api_input needs SCIPY_ARRAY_API=1 before scipy is imported: it runs in its own process below
    skipped_for_env = {"check_array_api_input"} if os.environ.get("SCIPY_ARRAY_API") != "1" else set()
    not_passed = [
        (r["check_name"], r["status"], repr(r["exception"]))
        for r in results
        if r["status"] != "passed" and not (r["status"] == "skipped" and r["check_name"] in skipped_for_env)
    ]
    assert not not_passed
    # scikit-learn runs this one in its own test suite only, not in check_estimator
    check_dataframe_column_names_consistency("BankingCLVModel", BankingCLVModel(**CHECKED))


def test_passes_the_array_api_check_with_scipy_array_api_set() -> None:
    code = (
        "from sklearn.utils.estimator_checks import check_array_api_input\n"
        "from clv.model.estimator import BankingCLVModel\n"
        f"check_array_api_input('BankingCLVModel', BankingCLVModel(**{CHECKED!r}), array_namespace='numpy',"
        " expect_only_array_outputs=False)\n"
    )
    env = {**os.environ, "SCIPY_ARRAY_API": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_nan_is_input_but_inf_and_strings_are_refused(data: tuple[pd.DataFrame, np.ndarray, np.ndarray]) -> None:
    X, y, _ = data
    A = X.to_numpy()
    assert np.isnan(A).any()
    model = BankingCLVModel(n_estimators=5).fit(A, y)
    assert np.isfinite(model.predict(np.full((1, A.shape[1]), np.nan))).all()
    with pytest.raises(ValueError, match="infinity"):
        model.predict(np.where(np.isnan(A), np.inf, A))
    with pytest.raises(ValueError, match="infinity"):
        BankingCLVModel(n_estimators=5).fit(A, np.where(y == 0, np.inf, y))
    with pytest.raises(ValueError, match="could not convert"):
        model.predict(np.full((1, A.shape[1]), "a"))


def test_too_few_customers_to_calibrate_or_mismatched_groups_are_refused(
    data: tuple[pd.DataFrame, np.ndarray, np.ndarray],
) -> None:
    X, y, _ = data
    with pytest.raises(ValueError, match=r"n_samples=400 in 1 groups is too few"):
        BankingCLVModel(n_estimators=5).fit(X, y, groups=np.zeros(len(y)))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        BankingCLVModel(n_estimators=5).fit(X, y, groups=np.arange(3))


def test_groups_keep_a_customers_rows_together(data: tuple[pd.DataFrame, np.ndarray, np.ndarray]) -> None:
    _, y, groups = data
    held = conformal.held_back(len(y), groups, 0.25, seed=42)
    per_customer = pd.Series(held).groupby(groups).agg(["min", "max"])
    assert (per_customer["min"] == per_customer["max"]).all()  # all of a customer's rows or none
    assert held.reshape(-1, 2)[:, 0].sum() == round(0.25 * np.unique(groups).size)


def test_auto_fits_two_part_on_zero_heavy_labels(data: tuple[pd.DataFrame, np.ndarray, np.ndarray]) -> None:
    X, y, _ = data
    assert BankingCLVModel(n_estimators=5).fit(X, y).target_ == "two_part"
    no_zero = np.where(y == 0, 1.0, y)
    assert BankingCLVModel(n_estimators=5).fit(X, no_zero).target_ == "squared_error"
    with pytest.raises(ValueError, match="two_part"):
        BankingCLVModel(target="two_part", n_estimators=5).fit(X, no_zero)


# ---- ledger columns by name -----------------------------------------------------------------------


def test_ledger_features_must_name_columns_of_X(data: tuple[pd.DataFrame, np.ndarray, np.ndarray]) -> None:
    X, y, _ = data
    with pytest.raises(ValueError, match=r"not among the columns of X: \['ledger_margin'\]"):
        BankingCLVModel(n_estimators=5, ledger_features=("margin_12m", "ledger_margin")).fit(X, y)
    with pytest.raises(ValueError, match="needs X as a pandas DataFrame"):
        BankingCLVModel(n_estimators=5, ledger_features=LEDGER).fit(X.to_numpy(), y)
    with pytest.raises(TypeError, match="tuple of column names"):
        BankingCLVModel(n_estimators=5, ledger_features="margin_12m").fit(X, y)


def test_ledger_columns_are_resolved_by_name(models: dict[str, BankingCLVModel]) -> None:
    model = models["squared_error"]
    np.testing.assert_array_equal(model.feature_names_in_, COLUMNS)
    assert model.n_features_in_ == len(COLUMNS)
    assert [COLUMNS[j] for j in model.ledger_columns_] == list(LEDGER)
    assert set(model.margin_) == {"ledger", "no_ledger"}


def test_without_ledger_masks_exactly_the_ledger_columns_and_keeps_the_type(
    models: dict[str, BankingCLVModel], data: tuple[pd.DataFrame, np.ndarray, np.ndarray]
) -> None:
    model = models["squared_error"]
    X, _, _ = data
    before = X.copy()
    masked = model.without_ledger(X)
    assert type(masked) is pd.DataFrame
    assert list(masked.columns) == list(X.columns) and masked.index.equals(X.index)
    assert masked[list(LEDGER)].isna().all().all()
    others = [c for c in COLUMNS if c not in LEDGER]
    pd.testing.assert_frame_equal(masked[others], X[others])
    pd.testing.assert_frame_equal(X, before)  # the caller's frame is left alone

    A = X.to_numpy()
    masked_array = model.without_ledger(A)
    assert type(masked_array) is np.ndarray
    np.testing.assert_array_equal(masked_array, masked.to_numpy())
    assert not np.isnan(A[:, model.ledger_columns_]).any()

    with pytest.raises(ValueError, match="fee_income_12m"):
        model.without_ledger(X.drop(columns="fee_income_12m"))


def test_without_ledger_features_there_is_no_dropout_and_one_margin(
    data: tuple[pd.DataFrame, np.ndarray, np.ndarray],
) -> None:
    X, y, groups = data
    plain = BankingCLVModel(n_estimators=10).fit(X, y, groups=groups)
    with_ledger = BankingCLVModel(n_estimators=10, ledger_features=LEDGER).fit(X, y, groups=groups)
    assert set(plain.margin_) == {"all"}
    pd.testing.assert_frame_equal(plain.without_ledger(X), X)
    # learning from ledger-less copies is what puts a missing-indicator on the (complete) ledger columns
    income = COLUMNS.index("income")
    assert list(plain.imputer_.indicator_.features_) == [income]
    assert sorted(with_ledger.imputer_.indicator_.features_) == sorted([income, *with_ledger.ledger_columns_])


# ---- names, predictions and drivers ---------------------------------------------------------------


def test_explain_names_features_from_feature_names_in(
    models: dict[str, BankingCLVModel], data: tuple[pd.DataFrame, np.ndarray, np.ndarray]
) -> None:
    X, y, _ = data
    model = models["squared_error"]
    drivers = model.explain(X.iloc[:3], top=4)
    contrib = model.predict_all(X.iloc[:3])["contrib"]
    assert len(drivers) == 3
    for i, (row, found) in enumerate(zip(contrib, drivers, strict=True)):
        assert len(found) == 4
        assert {d["feature"] for d in found} <= set(COLUMNS)
        sizes = [abs(d["contribution"]) for d in found]
        assert sizes == sorted(sizes, reverse=True) and sizes[0] == pytest.approx(np.abs(row).max(), abs=0.01)
        for d in found:
            value = X.iloc[i][d["feature"]]
            assert d["value"] is None if np.isnan(value) else d["value"] == value
    unnamed = BankingCLVModel(n_estimators=10).fit(X.to_numpy(), y)
    assert {d["feature"] for row in unnamed.explain(X.to_numpy()[:3]) for d in row} <= {f"x{j}" for j in range(6)}


def test_top_drivers_takes_the_names_it_is_given() -> None:
    found = top_drivers(np.array([1.0, np.nan, 3.0]), np.array([0.5, -2.0, 1.0]), 2, ["a", "b", "c"])
    assert found == [
        {"feature": "b", "value": None, "contribution": -2.0},
        {"feature": "c", "value": 3.0, "contribution": 1.0},
    ]


def test_a_frame_fitted_model_wants_the_same_columns(
    models: dict[str, BankingCLVModel], data: tuple[pd.DataFrame, np.ndarray, np.ndarray]
) -> None:
    X, _, _ = data
    model = models["squared_error"]
    # an array is taken positionally (scikit-learn warns that its names cannot be checked), same answer
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        from_array = model.predict(X.to_numpy())
    np.testing.assert_array_equal(from_array, model.predict(X))
    with pytest.raises(ValueError, match="same order"):
        model.predict(X[list(reversed(COLUMNS))])
    with pytest.raises(ValueError, match="expecting 6 features"), pytest.warns(UserWarning, match="feature names"):
        model.predict(X.to_numpy()[:, :5])


def test_drivers_add_up_to_the_prediction(model: BankingCLVModel, X: pd.DataFrame) -> None:
    for rows in (X.iloc[:1], X, model.without_ledger(X)):
        out = model.predict_all(rows)
        assert out["contrib"].shape == (len(rows), len(COLUMNS))
        np.testing.assert_allclose(
            model.expected_value_ + out["contrib"].sum(axis=1), out["point"], rtol=1e-6, atol=1e-6
        )
        np.testing.assert_array_equal(out["point"], model.predict(rows))
        assert model.predict_all(rows, contributions=False)["contrib"] is None


def test_compiled_predictions_equal_scikit_learns_pipelines(model: BankingCLVModel, X: pd.DataFrame) -> None:
    for rows in (X.iloc[:1], X, model.without_ledger(X)):
        A = rows.to_numpy()
        point = model.predict(rows)
        np.testing.assert_allclose(point, sklearn_point(model, A), rtol=1e-6, atol=1e-6)
        # the quantile pipelines' band stretched to hold the point, widened by the margin of its ledger kind
        a, b = (q.predict(A) for q in model.quantiles_)
        has_ledger = ~np.isnan(A[:, model.ledger_columns_]).all(axis=1)
        margin = np.where(has_ledger, model.margin_["ledger"], model.margin_["no_ledger"])
        low, high = model.predict_interval(rows)
        np.testing.assert_allclose(low, np.minimum(np.minimum(a, b), point) - margin, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(high, np.maximum(np.maximum(a, b), point) + margin, rtol=1e-6, atol=1e-6)


def test_inputs_on_a_split_go_the_way_scikit_learns_trees_send_them(models: dict[str, BankingCLVModel]) -> None:
    """The walk compares float32 inputs with float32 thresholds rounded down: an input at a split's threshold, or
    one float32 step either side of it, takes scikit-learn's branch."""
    model = models["squared_error"]
    point = model.point_[-1]
    splits = [
        (feature, threshold)
        for est in point.estimators_[:, 0]
        for feature, threshold in zip(est.tree_.feature, est.tree_.threshold, strict=True)
        if feature >= 0 and feature < len(COLUMNS)
    ]
    rows = []
    for feature, threshold in splits[:60]:
        at = np.float32(threshold)
        for value in (np.nextafter(at, np.float32(-np.inf)), at, np.nextafter(at, np.float32(np.inf))):
            row = model.forest_.fill.copy()
            row[feature] = value
            rows.append(row)
    A = np.array(rows)
    np.testing.assert_allclose(
        model.predict(pd.DataFrame(A, columns=COLUMNS)), sklearn_point(model, A), rtol=1e-9, atol=1e-9
    )


def _forged(arrays: dict[str, np.ndarray], name: str, change) -> dict[str, np.ndarray]:
    forged = dict(arrays)
    forged[name] = change(arrays[name].copy())
    return forged


def _set(index: int, value: float):
    def change(array: np.ndarray) -> np.ndarray:
        array[index] = value
        return array

    return change


FORGERIES = {  # what a changed model.npz could hold, and the refusal it gets before the walk reads it
    "a feature past the inputs": ("feature", _set(0, 999), "at no input"),
    "a child outside its tree": ("left", _set(0, 10**6), "outside its tree"),
    "a child before its parent": ("right", _set(1, 0), "backwards"),
    "ensembles out of order": ("tree_ensemble", lambda a: a[::-1], "ensembles are not in order"),
    "an indicator of no feature": ("indicator", lambda a: np.append(a, 99), "imputer does not fit"),
    "an array of two dimensions": ("init", lambda a: a.reshape(-1, 1), "not one-dimensional"),
    "a tree deeper than recorded": ("tree_depth", lambda a: np.ones_like(a), "deeper than the 1 levels"),
    "a tree deeper than the walk takes": ("tree_depth", lambda a: np.full_like(a, 13), "13 levels deep"),
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_forest_is_refused_before_it_is_walked(models: dict[str, BankingCLVModel], forgery: str) -> None:
    """The compiled walk does not check its reads: every index it follows is checked when the arrays are read."""
    forest = models["two_part"].forest_
    name, change, refusal = FORGERIES[forgery]
    with pytest.raises(ValueError, match=refusal):
        type(forest).from_arrays(_forged(forest.to_arrays(), name, change), forest.n_features, forest.attribute)
    assert type(forest).from_arrays(forest.to_arrays(), forest.n_features, forest.attribute).depth == forest.depth


@pytest.mark.parametrize("max_depth", [0, 13, None])
def test_a_depth_the_walk_cannot_take_is_refused_before_the_fit(
    data: tuple[pd.DataFrame, np.ndarray, np.ndarray], max_depth: int | None
) -> None:
    X, y, groups = data
    with pytest.raises(ValueError, match="max_depth must be a whole number from 1 to 12"):
        BankingCLVModel(max_depth=max_depth).fit(X, y, groups=groups)


def test_one_row_at_a_time_equals_all_rows_at_once(model: BankingCLVModel, X: pd.DataFrame) -> None:
    whole = model.predict_all(X)
    rows = [model.predict_all(X.iloc[i : i + 1]) for i in range(len(X))]
    for key in ("point", "low", "high", "confidence", "contrib"):
        np.testing.assert_array_equal(np.concatenate([r[key] for r in rows]), whole[key], err_msg=key)


def test_pickling_drops_the_compiled_forest_and_rebuilds_it(
    models: dict[str, BankingCLVModel], data: tuple[pd.DataFrame, np.ndarray, np.ndarray]
) -> None:
    X, _, _ = data
    model = models["two_part"]
    assert "forest_" not in model.__getstate__() and hasattr(model, "forest_")
    again = pickle.loads(pickle.dumps(model))
    expected, out = model.predict_all(X), again.predict_all(X)
    for key in expected:
        np.testing.assert_array_equal(out[key], expected[key], err_msg=key)
    assert again.expected_value_ == model.expected_value_
