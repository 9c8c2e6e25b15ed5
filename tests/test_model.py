"""BankingCLVModel: scikit-learn manners, a compiled forest equal to scikit-learn, drivers that add up,
versioned artifacts that refuse tampering, the real CLI, and a model that beats the naive answer."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from clv import artifacts, dates, metrics
from clv.artifacts import ModelArtifactError
from clv.bank import load_bank
from clv.estimator import LEDGER_COLUMNS, BankingCLVModel, without_ledger
from clv.features import FEATURE_NAMES
from clv.training import Rows, evaluate_saved, held_out, last12_baseline, rows_at
from clv.trees import ROW_WALK_LIMIT
from tests.conftest import ROOT

METRIC_KEYS = {"normalized_gini", "spearman", "decile_mape", "total_error", "mae", "rmse", "r2"}


@pytest.fixture(scope="module")
def rows(bank_dir: Path, loaded: artifacts.LoadedModel) -> Rows:
    """Every eligible customer of the small bank as of the model's cutoff."""
    cutoff = dt.date.fromisoformat(loaded.metadata["cutoff"])
    return rows_at(load_bank(bank_dir), [cutoff], loaded.metadata["horizon_months"], loaded.metadata["discount_rate"])


@pytest.fixture(scope="module")
def small_models(rows: Rows) -> dict[str, BankingCLVModel]:
    """A few quick models, one per target, on the rows of the cutoff. The ledger bank has no zero label,
    so the two-part model learns from labels whose smallest fifth is set to zero."""
    small = np.abs(rows.y) < np.quantile(np.abs(rows.y), 0.2)
    labels = {"squared_error": rows.y, "log": rows.y, "two_part": np.where(small, 0.0, rows.y)}
    return {
        target: BankingCLVModel(target=target, n_estimators=30).fit(rows.X, y, groups=rows.customer_id)
        for target, y in labels.items()
    }


def with_gaps(X: np.ndarray, share: float = 0.2) -> np.ndarray:
    """X with a random share of its cells missing."""
    gaps = X.copy()
    gaps[np.random.default_rng(3).random(X.shape) < share] = np.nan
    return gaps


VARIANTS = {"as_built": lambda X: X, "without_ledger": without_ledger, "with_gaps": with_gaps}


def sklearn_point(model: BankingCLVModel, X: np.ndarray) -> np.ndarray:
    """The point prediction from the fitted scikit-learn pipelines themselves."""
    target = getattr(model, "target_", model.target)
    if target == "squared_error":
        return model.point_.predict(X)
    if target == "log":
        z = model.point_.predict(X)
        return np.sign(z) * np.expm1(np.abs(z))
    return model.point_.predict_proba(X)[:, 1] * model.size_.predict(X)


# ---- scikit-learn manners ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["predict", "predict_interval", "predict_all", "explain"])
def test_an_unfitted_model_raises_not_fitted(rows: Rows, method: str) -> None:
    with pytest.raises(NotFittedError):
        getattr(BankingCLVModel(), method)(rows.X[:2])


def test_fit_returns_self_and_params_clone(rows: Rows) -> None:
    model = BankingCLVModel(n_estimators=30, max_depth=3, random_state=7)
    assert model.fit(rows.X, rows.y) is model
    params = model.get_params()
    assert params["n_estimators"] == 30 and params["max_depth"] == 3 and params["random_state"] == 7
    twin = clone(model)
    assert twin.get_params() == params
    assert not hasattr(twin, "point_")
    with pytest.raises(NotFittedError):
        twin.predict(rows.X[:1])
    # the same seed and data give the same model
    np.testing.assert_array_equal(twin.fit(rows.X, rows.y).predict(rows.X), model.predict(rows.X))
    assert clone(model).set_params(n_estimators=5).n_estimators == 5


def test_a_bad_target_or_shape_is_refused(rows: Rows, loaded: artifacts.LoadedModel) -> None:
    with pytest.raises(ValueError, match="target"):
        BankingCLVModel(target="nonsense").fit(rows.X, rows.y)
    with pytest.raises(ValueError, match="features"):
        loaded.model.predict(rows.X[:, :-1])


# ---- the compiled forest is scikit-learn ---------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("n_rows", [1, 500])
def test_compiled_forest_equals_scikit_learn(
    loaded: artifacts.LoadedModel, rows: Rows, n_rows: int, variant: str
) -> None:
    assert (n_rows <= ROW_WALK_LIMIT) == (n_rows == 1)  # one row walks in numpy, 500 use Cython apply
    model = loaded.model
    X = VARIANTS[variant](rows.X[:n_rows])
    assert X.shape[0] == n_rows
    point = model.predict(X)
    np.testing.assert_allclose(point, sklearn_point(model, X), rtol=1e-6, atol=1e-6)
    # the interval: the quantile pipelines' band stretched to hold the point, widened by the conformal margin
    a, b = (q.predict(X) for q in model.quantiles_)
    has_ledger = ~np.isnan(X[:, LEDGER_COLUMNS]).all(axis=1)
    margin = np.where(has_ledger, model.margin_["ledger"], model.margin_["no_ledger"])
    low, high = model.predict_interval(X)
    expected_low = np.minimum(np.minimum(np.minimum(a, b), point) - margin, point)
    expected_high = np.maximum(np.maximum(np.maximum(a, b), point) + margin, point)
    np.testing.assert_allclose(low, expected_low, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(high, expected_high, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("target", ["squared_error", "log", "two_part"])
def test_compiled_forest_equals_scikit_learn_for_every_target(
    small_models: dict[str, BankingCLVModel], rows: Rows, target: str
) -> None:
    model = small_models[target]
    for X in (rows.X[:1], with_gaps(rows.X[:1]), rows.X[:500], with_gaps(rows.X[:500])):
        np.testing.assert_allclose(model.predict(X), sklearn_point(model, X), rtol=1e-6, atol=1e-6)


# ---- drivers add up -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_rows", [1, 500])
def test_attributions_reconcile_with_the_prediction(
    loaded: artifacts.LoadedModel, small_models: dict[str, BankingCLVModel], rows: Rows, n_rows: int
) -> None:
    for name, model in {"served": loaded.model, **small_models}.items():
        for X in (rows.X[:n_rows], with_gaps(rows.X[:n_rows])):
            out = model.predict_all(X)
            assert out["contrib"].shape == (n_rows, len(FEATURE_NAMES))
            np.testing.assert_allclose(
                model.expected_value_ + out["contrib"].sum(axis=1), out["point"], rtol=1e-6, atol=1e-6, err_msg=name
            )
            np.testing.assert_allclose(out["point"], model.predict(X), rtol=1e-12, err_msg=name)


def test_explain_names_the_largest_drivers_first(loaded: artifacts.LoadedModel, rows: Rows) -> None:
    model = loaded.model
    drivers = model.explain(rows.X[:3], top=4)
    contrib = model.predict_all(rows.X[:3])["contrib"]
    assert len(drivers) == 3
    for row, found in zip(contrib, drivers, strict=True):
        assert len(found) == 4
        sizes = [abs(d["contribution"]) for d in found]
        assert sizes == sorted(sizes, reverse=True)
        assert sizes[0] == pytest.approx(np.abs(row).max(), abs=0.01)
        assert {d["feature"] for d in found} <= set(FEATURE_NAMES)


def test_interval_contains_the_point_and_confidence_is_in_0_1(loaded: artifacts.LoadedModel, rows: Rows) -> None:
    out = loaded.model.predict_all(rows.X)
    assert (out["low"] <= out["point"]).all() and (out["point"] <= out["high"]).all()
    assert ((out["confidence"] > 0) & (out["confidence"] <= 1)).all()


# ---- artifacts -----------------------------------------------------------------------------------


@pytest.fixture
def models(model_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the session's model folder."""
    out = tmp_path / "models"
    shutil.copytree(model_dir, out, symlinks=True)
    return out


def resave(loaded: artifacts.LoadedModel, model_dir: Path) -> Path:
    """Save the loaded model again as a new version."""
    importance = joblib.load(loaded.path / "feature_importance.joblib")
    return artifacts.save(loaded.model, dict(loaded.metadata), importance, model_dir)


def latest_name(model_dir: Path) -> str:
    return (model_dir / artifacts.LATEST).resolve().name


def test_save_then_load_gives_identical_predictions(
    loaded: artifacts.LoadedModel, models: Path, rows: Rows, tmp_path: Path
) -> None:
    copy = artifacts.load(models)
    assert copy.version == loaded.version
    path = resave(loaded, tmp_path / "again")
    again = artifacts.load(tmp_path / "again")
    assert again.path == path and again.version != loaded.version
    assert again.metadata["version"] == path.name.removeprefix(artifacts.PREFIX)
    expected = loaded.model.predict_all(rows.X)
    for other in (copy, again):
        out = other.model.predict_all(rows.X)
        for key in ("point", "low", "high", "confidence", "contrib"):
            np.testing.assert_array_equal(out[key], expected[key])
        assert other.model.expected_value_ == loaded.model.expected_value_


@pytest.mark.parametrize("damage", ["changed", "truncated"])
@pytest.mark.parametrize("name", ["model.joblib", "metadata.json"])
def test_a_changed_or_truncated_file_is_refused(models: Path, name: str, damage: str) -> None:
    file = models / latest_name(models) / name
    data = bytearray(file.read_bytes())
    if damage == "changed":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[len(data) // 2 :]
    file.write_bytes(bytes(data))
    with pytest.raises(ModelArtifactError, match=re.escape(name)):
        artifacts.load(models)
    with pytest.raises(ModelArtifactError, match=re.escape(name)):
        artifacts.promote(models, latest_name(models))
    assert len(artifacts.versions(models)) <= 1  # listing still works


@pytest.mark.parametrize("damage", ["changed", "truncated"])
def test_a_changed_or_truncated_manifest_is_refused(models: Path, damage: str) -> None:
    file = models / latest_name(models) / artifacts.MANIFEST
    text = file.read_text()
    if damage == "changed":
        digest = json.loads(text)["model.joblib"]["sha256"]
        text = text.replace(digest, digest[::-1])
    else:
        text = text[: len(text) // 2]
    file.write_text(text)
    with pytest.raises(ModelArtifactError, match="model.joblib" if damage == "changed" else "manifest"):
        artifacts.load(models)


def test_a_missing_manifest_or_model_is_refused(models: Path, tmp_path: Path) -> None:
    (models / latest_name(models) / artifacts.MANIFEST).unlink()
    with pytest.raises(ModelArtifactError, match="manifest"):
        artifacts.load(models)
    with pytest.raises(ModelArtifactError, match="no model"):
        artifacts.load(tmp_path / "empty")


@pytest.mark.parametrize("failing_call", [1, 2, 3])
def test_a_failed_save_leaves_latest_on_the_previous_intact_version(
    loaded: artifacts.LoadedModel, models: Path, monkeypatch: pytest.MonkeyPatch, failing_call: int
) -> None:
    before = sorted(os.listdir(models))
    previous = latest_name(models)
    dump = joblib.dump
    calls = []

    def fails_midway(*args: object, **kwargs: object) -> object:
        calls.append(args[1])
        if len(calls) == failing_call:
            raise OSError("disk full")
        return dump(*args, **kwargs)

    monkeypatch.setattr(joblib, "dump", fails_midway)
    with pytest.raises(OSError, match="disk full"):
        resave(loaded, models)
    assert len(calls) == failing_call
    assert sorted(os.listdir(models)) == before  # no half-written folder, no stray link
    assert latest_name(models) == previous
    assert artifacts.load(models).version == loaded.version


def test_promote_rolls_back_and_versions_are_newest_first(loaded: artifacts.LoadedModel, models: Path) -> None:
    old = loaded.version
    new = resave(loaded, models).name.removeprefix(artifacts.PREFIX)
    assert artifacts.load(models).version == new
    listed = artifacts.versions(models)
    assert [v["version"] for v in listed] == [new, old]
    assert [v["latest"] for v in listed] == [True, False]
    assert listed[1]["normalized_gini"] == loaded.metadata["metrics"]["model"]["normalized_gini"]

    artifacts.promote(models, old)
    assert artifacts.load(models).version == old
    assert [v["latest"] for v in artifacts.versions(models)] == [False, True]
    artifacts.promote(models, f"{artifacts.PREFIX}{new}")  # the folder name works too
    assert artifacts.load(models).version == new

    with pytest.raises(ModelArtifactError, match="no version"):
        artifacts.promote(models, "19990101T000000000000Z")
    # a changed version is never made latest
    (models / f"{artifacts.PREFIX}{old}" / "model.joblib").write_bytes(b"not a model")
    with pytest.raises(ModelArtifactError, match=r"model\.joblib"):
        artifacts.promote(models, old)
    assert artifacts.load(models).version == new


# ---- the real CLI ----------------------------------------------------------------------------------


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLV_")}
    return subprocess.run(
        [sys.executable, str(ROOT / "model.py"), *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def cli_models(bank_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained by `python model.py train` in a subprocess."""
    out = tmp_path_factory.mktemp("cli_models")
    done = cli("train", "--data-dir", bank_dir, "--model-dir", out)
    assert done.returncode == 0, done.stderr
    assert "baseline_last12" in done.stdout
    return out


def test_a_cli_trained_model_loads_in_process(cli_models: Path, loaded: artifacts.LoadedModel, rows: Rows) -> None:
    from_cli = artifacts.load(cli_models)
    assert type(from_cli.model) is BankingCLVModel  # not __main__.BankingCLVModel
    assert from_cli.metadata["cutoff"] == loaded.metadata["cutoff"]
    # the same data and seed give the same model, through the CLI or the library
    np.testing.assert_allclose(from_cli.model.predict(rows.X), loaded.model.predict(rows.X), rtol=1e-9)


def test_cli_list_evaluate_and_promote(cli_models: Path, model_dir: Path, bank_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(cli_models, models, symlinks=True)
    trained = artifacts.load(models).version
    older = latest_name(model_dir)
    shutil.copytree(model_dir / older, models / older)

    listed = cli("list", "--model-dir", models)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert trained in lines[1] and "latest" in lines[1]
    assert older.removeprefix(artifacts.PREFIX) in "\n".join(lines[2:])

    evaluated = cli("evaluate", "--model-dir", models, "--data-dir", bank_dir, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    for name in ("model", "baseline_last12", "baseline_mean", "oracle"):
        assert set(report["metrics"][name]) >= METRIC_KEYS, name
    assert 0 <= report["metrics"]["model"]["interval_coverage"] <= 1
    assert len(report["deciles"]) == 10

    promoted = cli("promote", older, "--model-dir", models)
    assert promoted.returncode == 0, promoted.stderr
    assert artifacts.load(models).path.name == older


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--data-dir", "{bank}", "--model-dir", "{models}", "--cutoff", "2030-01-01"],
        ["train", "--data-dir", "{missing}", "--model-dir", "{models}"],
        ["evaluate", "--data-dir", "{bank}", "--model-dir", "{missing}"],
        ["promote", "--model-dir", "{models}", "19990101T000000000000Z"],
    ],
    ids=lambda args: " ".join(a for a in args if not a.startswith("{")),
)
def test_bad_input_is_one_line_and_exit_2(bank_dir: Path, tmp_path: Path, args: list[str]) -> None:
    models = tmp_path / "models"
    models.mkdir()
    places = {"{bank}": str(bank_dir), "{models}": str(models), "{missing}": str(tmp_path / "missing")}
    done = cli(*(places.get(a, a) for a in args))
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "error" in lines[0], done.stderr
    assert not any(models.iterdir())


# ---- it beats the naive answer on held-out customers ---------------------------------------------


@pytest.fixture(scope="module")
def held_out_rows(bank_dir: Path, loaded: artifacts.LoadedModel) -> Rows:
    """Rows of the customers training held out, at its cutoff and two earlier quarters (a moderate sample)."""
    meta = loaded.metadata
    bank = load_bank(bank_dir)
    horizon, rate = meta["horizon_months"], meta["discount_rate"]
    cutoffs = [dt.date.fromisoformat(c) for c in meta["rows"]["cutoffs"]]
    seen = rows_at(bank, cutoffs, horizon, rate)  # the rows training split, customer by customer
    test_ids = np.unique(seen.customer_id[held_out(seen.customer_id, meta["seed"])])
    cutoff = dt.date.fromisoformat(meta["cutoff"])
    every = rows_at(bank, [*cutoffs, dates.add_months(cutoff, -6), dates.add_months(cutoff, -9)], horizon, rate)
    main = every.cutoff == dates.to_day(cutoff)
    test = np.isin(every.customer_id, test_ids)
    assert (test & main).sum() == meta["rows"]["test"]  # the same customers as training's report
    return Rows(every.X[test], every.y[test], every.customer_id[test], every.cutoff[test])


def test_the_stored_metrics_have_one_stable_shape(loaded: artifacts.LoadedModel) -> None:
    stored = loaded.metadata["metrics"]
    for name in ("model", "model_without_ledger", "baseline_last12", "baseline_mean", "oracle"):
        assert set(stored[name]) >= METRIC_KEYS, name
    assert "interval_coverage" in stored["model"]
    assert stored["model"]["normalized_gini"] > stored["baseline_mean"]["normalized_gini"] + 0.5


def test_the_model_beats_the_last_12_months_on_held_out_customers(
    loaded: artifacts.LoadedModel, held_out_rows: Rows
) -> None:
    X, y = held_out_rows.X, held_out_rows.y
    assert y.size > 400
    meta = loaded.metadata
    predicted = loaded.model.predict(X)
    naive = last12_baseline(X, meta["horizon_months"], meta["discount_rate"])
    assert metrics.normalized_gini(y, predicted) > metrics.normalized_gini(y, naive) + 0.01
    # Decile calibration is not asserted here: on this 1,200-customer bank the model trains on ~700
    # customers and its top decile falls short (the note gives the default-bank figures).


def test_interval_coverage_is_near_nominal_on_held_out_customers(
    loaded: artifacts.LoadedModel, held_out_rows: Rows
) -> None:
    assert 0.70 <= loaded.metadata["metrics"]["model"]["interval_coverage"] <= 0.90
    low, high = loaded.model.predict_interval(held_out_rows.X)
    covered = (held_out_rows.y >= low) & (held_out_rows.y <= high)
    assert 0.70 <= covered.mean() <= 0.90


def test_evaluate_on_the_training_data_reports_the_held_out_customers_of_training(
    loaded: artifacts.LoadedModel, bank_dir: Path
) -> None:
    """`python model.py evaluate` on the training folder must judge the customers training held out,
    so its figures are the train report's, not figures on customers the model learned from."""
    result = evaluate_saved(loaded.model, loaded.metadata, bank_dir)
    assert result["test_customers"] == loaded.metadata["test_customers"]
    for name in ("model", "baseline_last12"):
        for key in ("normalized_gini", "decile_mape", "mae"):
            assert result["metrics"][name][key] == pytest.approx(loaded.metadata["metrics"][name][key]), (name, key)
