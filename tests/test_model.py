"""The trained model on the small bank: the served model equals scikit-learn, versioned artifacts that refuse
tampering and other versions' models, the real CLI, and a model that beats the naive answer."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from clv.common import dates
from clv.common.cluster import LocalRunner
from clv.data.bank import load_bank
from clv.data.layout import open_bank
from clv.model import artifacts, metrics
from clv.model.artifacts import ModelArtifactError
from clv.model.config import TrainingConfig
from clv.model.estimator import BankingCLVModel
from clv.model.evaluation import evaluate_saved, last12_baseline
from clv.model.features import FEATURE_NAMES, LEDGER_FEATURES
from clv.model.protocol import Rows, churn_labels, gather_learning_rows, held_out, rows_at
from tests.conftest import resave
from tests.servers import run_script

METRIC_KEYS = {"normalized_gini", "spearman", "decile_mape", "total_error", "mae", "rmse", "r2"}


@pytest.fixture(scope="module")
def rows(bank_dir: Path, loaded: artifacts.LoadedModel) -> Rows:
    """Every eligible customer of the small bank as of the model's cutoff."""
    meta = loaded.metadata
    return rows_at(load_bank(bank_dir), [meta.cutoff], meta.horizon_months, meta.discount_rate)


def with_gaps(X: pd.DataFrame, share: float = 0.2) -> pd.DataFrame:
    """X with a random share of its cells missing."""
    return X.mask(np.random.default_rng(3).random(X.shape) < share)


VARIANTS = {
    "as_built": lambda model, X: X,
    "without_ledger": lambda model, X: model.without_ledger(X),
    "with_gaps": lambda model, X: with_gaps(X),
}


# ---- the served model is scikit-learn's ---------------------------------------------------------------


def test_the_model_knows_its_features(loaded: artifacts.LoadedModel) -> None:
    model = loaded.model
    assert list(model.feature_names_in_) == list(FEATURE_NAMES) == loaded.metadata.feature_names
    assert model.n_features_in_ == len(FEATURE_NAMES)
    assert [FEATURE_NAMES[j] for j in model.ledger_columns_] == list(LEDGER_FEATURES)


@pytest.fixture(scope="module")
def rebuilt(bank_dir: Path, loaded: artifacts.LoadedModel) -> BankingCLVModel:
    """The saved model fitted again, by clone and fit, on the rows training learned from: scikit-learn's fitted
    pipelines, which a loaded model (arrays and JSON) does not carry."""
    meta = loaded.metadata
    config = TrainingConfig(
        horizon_months=meta.horizon_months,
        churn_months=meta.churn_months,
        discount_rate=meta.discount_rate,
        seed=meta.seed,
    )
    assert config.learning_cutoffs(meta.cutoff) == meta.rows.cutoffs
    learned = gather_learning_rows(open_bank(bank_dir), LocalRunner(), meta.rows.cutoffs, config)
    assert learned.y.size == meta.rows.train
    return clone(loaded.model).fit(
        learned.X, learned.y, groups=learned.customer_id, churned=churn_labels(learned.churned)
    )


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("n_rows", [1, 500])
def test_compiled_forest_equals_scikit_learn(
    loaded: artifacts.LoadedModel, rebuilt: BankingCLVModel, rows: Rows, n_rows: int, variant: str
) -> None:
    """The loaded model's trees (arrays read from its folder, walked by the compiled loop) give what scikit-learn's
    fitted pipelines give, for a row and for 500; and the interval holds the point."""
    model = loaded.model
    X = VARIANTS[variant](model, rows.X.iloc[:n_rows])
    values = X.to_numpy()  # the inner pipelines were fitted on arrays
    out = model.predict_all(X)
    np.testing.assert_allclose(out["point"], rebuilt.point_.predict(values), rtol=1e-6, atol=1e-6)
    raw = model.forest_.evaluate(values, contributions=False)[0]
    for k, quantile in enumerate(rebuilt.quantiles_, start=1):
        np.testing.assert_allclose(raw[:, k], quantile.predict(values), rtol=1e-6, atol=1e-6)
    assert (out["low"] <= out["point"]).all() and (out["point"] <= out["high"]).all()
    assert ((out["confidence"] > 0) & (out["confidence"] <= 1)).all()
    np.testing.assert_allclose(model.expected_value_ + out["contrib"].sum(axis=1), out["point"], atol=1e-6)


def test_many_rows_get_the_attributions_each_row_gets_alone(loaded: artifacts.LoadedModel, rows: Rows) -> None:
    """A scoring's values and drivers are a served answer's: many rows, in blocks and chunks on two threads, get the
    bits each row gets alone."""
    forest = loaded.model.forest_
    values = np.vstack([rows.X.to_numpy()] * -(-20_000 // len(rows.X)))[:20_000]  # more than one chunk of rows
    many = forest.evaluate(values)
    for i in (0, 1, 63, 64, 4097, 8191, 8192, 19_999):
        alone = forest.evaluate(values[i : i + 1])
        assert np.array_equal(many[0][i], alone[0][0]) and np.array_equal(many[1][i], alone[1][0])


def test_a_frame_of_other_columns_is_refused(loaded: artifacts.LoadedModel, rows: Rows) -> None:
    with pytest.raises(ValueError, match="missing:\n- loans_balance_change_12m"):
        loaded.model.predict(rows.X.iloc[:, :-1])
    with pytest.raises(ValueError, match="66 features"), pytest.warns(UserWarning, match="feature names"):
        loaded.model.predict(rows.X.iloc[:, :-1].to_numpy())
    swapped = rows.X[[*FEATURE_NAMES[1:], FEATURE_NAMES[0]]]
    with pytest.raises(ValueError, match="feature names"):
        loaded.model.predict(swapped)


def test_a_trained_model_is_rebuilt_by_clone_and_fit_on_its_training_rows(
    loaded: artifacts.LoadedModel, rebuilt: BankingCLVModel, rows: Rows
) -> None:
    """All training learns besides the fit (the longer horizons, `lifetime`) is a parameter of the model: a clone
    fitted on the rows training learned from answers as the saved model does, every horizon included."""
    saved = loaded.model
    assert rebuilt.lifetime_ == saved.lifetime_ and saved.lifetime_.horizons == (12, 36, 60)
    for X in (rows.X, saved.without_ledger(rows.X)):
        np.testing.assert_array_equal(rebuilt.predict(X), saved.predict(X))
        for mine, theirs in zip(rebuilt.predict_interval(X), saved.predict_interval(X), strict=True):
            np.testing.assert_array_equal(mine, theirs)
        np.testing.assert_array_equal(rebuilt.predict_churn(X), saved.predict_churn(X))
        mine, theirs = (model.predict_all(X, contributions=False)["horizons"] for model in (rebuilt, saved))
        assert mine.keys() == theirs.keys() == {12, 36, 60}
        for months, values in mine.items():
            for a, b in zip(values, theirs[months], strict=True):
                np.testing.assert_array_equal(a, b)


def test_a_band_of_fewer_customers_leaves_the_point_model_as_it_was(
    bank_dir: Path, loaded: artifacts.LoadedModel, rebuilt: BankingCLVModel, rows: Rows
) -> None:
    """`max_band_customers` below the customers learned from: the quantile boosters and the churn classifier learn
    from that many (other trees), the point model from all of them (the same trees, the same answers)."""
    meta = loaded.metadata
    config = TrainingConfig(seed=meta.seed, horizon_months=meta.horizon_months, discount_rate=meta.discount_rate)
    learned = gather_learning_rows(open_bank(bank_dir), LocalRunner(), meta.rows.cutoffs, config)
    fewer = clone(rebuilt).set_params(max_band_customers=100)
    fewer.fit(learned.X, learned.y, groups=learned.customer_id, churned=churn_labels(learned.churned))
    assert rebuilt.max_band_customers >= np.unique(learned.customer_id).size > 4 * 100
    np.testing.assert_array_equal(fewer.predict(rows.X), rebuilt.predict(rows.X))
    assert not np.array_equal(fewer.predict_interval(rows.X)[0], rebuilt.predict_interval(rows.X)[0])
    assert not np.array_equal(fewer.predict_churn(rows.X), rebuilt.predict_churn(rows.X))
    assert fewer.quantiles_[0][-1].estimators_[0, 0].tree_.n_node_samples[0] < (
        rebuilt.quantiles_[0][-1].estimators_[0, 0].tree_.n_node_samples[0] / 2
    )


# ---- artifacts -----------------------------------------------------------------------------------


def latest_name(model_dir: Path) -> str:
    return (model_dir / artifacts.LATEST).resolve().name


def rewrite_metadata(version: Path, change: dict) -> None:
    """Change metadata.json and record it in the manifest, as another version of the code would have."""
    path = version / "metadata.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | change))
    manifest = json.loads((version / artifacts.MANIFEST).read_text())
    manifest["files"]["metadata.json"] = {"sha256": artifacts.sha256(path), "bytes": path.stat().st_size}
    (version / artifacts.MANIFEST).write_text(json.dumps(manifest))


def test_save_then_load_gives_identical_predictions(
    loaded: artifacts.LoadedModel, models: Path, rows: Rows, tmp_path: Path
) -> None:
    copy = artifacts.load(models)
    assert copy.version == loaded.version
    path = resave(loaded, tmp_path / "again")
    again = artifacts.load(tmp_path / "again")
    assert again.path == path and again.version != loaded.version
    assert again.metadata.version == path.name.removeprefix(artifacts.PREFIX)
    expected = loaded.model.predict_all(rows.X)
    for other in (copy, again):
        out = other.model.predict_all(rows.X)
        for key in ("point", "low", "high", "confidence", "contrib"):
            np.testing.assert_array_equal(out[key], expected[key])
        assert other.model.expected_value_ == loaded.model.expected_value_


@pytest.mark.parametrize("damage", ["changed", "truncated"])
@pytest.mark.parametrize("name", [artifacts.ARRAYS, artifacts.ESTIMATOR, "metadata.json"])
def test_a_changed_or_truncated_file_is_refused(models: Path, name: str, damage: str) -> None:
    version = latest_name(models)
    file = models / version / name
    data = bytearray(file.read_bytes())
    if damage == "changed":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[len(data) // 2 :]
    file.write_bytes(bytes(data))
    with pytest.raises(ModelArtifactError, match=re.escape(name)):
        artifacts.load(models)
    with pytest.raises(ModelArtifactError, match=re.escape(name)):
        artifacts.promote(models, version)
    if name != "metadata.json":  # its metadata is intact: the listing still shows it, for `promote` to refuse
        assert [v["version"] for v in artifacts.versions(models)] == [version.removeprefix(artifacts.PREFIX)]


@pytest.mark.parametrize("damage", ["changed", "truncated"])
def test_a_changed_or_truncated_manifest_is_refused(models: Path, damage: str) -> None:
    file = models / latest_name(models) / artifacts.MANIFEST
    text = file.read_text()
    if damage == "changed":
        digest = json.loads(text)["files"][artifacts.ARRAYS]["sha256"]
        text = text.replace(digest, digest[::-1])
    else:
        text = text[: len(text) // 2]
    file.write_text(text)
    with pytest.raises(ModelArtifactError, match=re.escape(artifacts.ARRAYS) if damage == "changed" else "manifest"):
        artifacts.load(models)


def test_a_missing_manifest_or_model_is_refused(models: Path, tmp_path: Path) -> None:
    (models / latest_name(models) / artifacts.MANIFEST).unlink()
    with pytest.raises(ModelArtifactError, match="manifest"):
        artifacts.load(models)
    with pytest.raises(ModelArtifactError, match="no model"):
        artifacts.load(tmp_path / "empty")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 1}, f"saved in model format 1, this code reads format {artifacts.ARTIFACT_FORMAT}; retrain"),
        ({"feature_names": [*FEATURE_NAMES[:-1], "margin_24m"]}, r"features differ .*margin_24m.*; retrain"),
        ({"metrics": {"model": {}}}, "not this code's metadata .*; retrain"),
    ],
    ids=["an older format", "other features", "another metadata shape"],
)
def test_a_model_of_another_version_of_the_code_is_refused_with_the_advice_to_retrain(
    models: Path, change: dict, message: str
) -> None:
    version = models / latest_name(models)
    rewrite_metadata(version, change)
    with pytest.raises(ModelArtifactError, match=message):
        artifacts.load(models)
    with pytest.raises(ModelArtifactError, match="retrain"):
        artifacts.promote(models, version.name)


@pytest.mark.parametrize("failing_call", [1, 3, 5])
def test_a_failed_save_leaves_latest_on_the_previous_intact_version(
    loaded: artifacts.LoadedModel, models: Path, monkeypatch: pytest.MonkeyPatch, failing_call: int
) -> None:
    before = sorted(os.listdir(models))
    previous = latest_name(models)
    write = Path.write_text
    calls = []

    def fails_midway(self: Path, *args: object, **kwargs: object) -> int:
        calls.append(self.name)
        if len(calls) == failing_call:
            raise OSError("disk full")
        return write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", fails_midway)
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
    assert listed[1]["normalized_gini"] == loaded.metadata.metrics.model.normalized_gini

    artifacts.promote(models, old)
    assert artifacts.load(models).version == old
    assert [v["latest"] for v in artifacts.versions(models)] == [False, True]
    artifacts.promote(models, f"{artifacts.PREFIX}{new}")  # the folder name works too
    assert artifacts.load(models).version == new

    with pytest.raises(ModelArtifactError, match="no version"):
        artifacts.promote(models, "19990101T000000000000Z")
    # a changed version is never made latest
    (models / f"{artifacts.PREFIX}{old}" / artifacts.ARRAYS).write_bytes(b"not a model")
    with pytest.raises(ModelArtifactError, match=re.escape(artifacts.ARRAYS)):
        artifacts.promote(models, old)
    assert artifacts.load(models).version == new


# ---- another horizon ------------------------------------------------------------------------------


def test_a_six_month_horizon_trains_on_six_month_labels(six_month_model: Path, bank_dir: Path) -> None:
    loaded = artifacts.load(six_month_model)
    meta = loaded.metadata
    assert (meta.horizon_months, meta.discount_rate) == (6, 0.05)
    assert meta.cutoff == dates.add_months(dates.last_month_end(meta.data_last_date), -6) == dt.date(2024, 6, 30)
    # judged against the six months after the cutoff: the 12-month model's labels are about twice as large
    six = rows_at(load_bank(bank_dir), [meta.cutoff], 6, 0.05)
    twelve = rows_at(load_bank(bank_dir), [meta.cutoff - dt.timedelta(days=182)], 12, 0.05)
    assert 0.35 < six.y.mean() / twelve.y.mean() < 0.65
    assert meta.metrics.model.normalized_gini > meta.metrics.baseline_mean.normalized_gini + 0.5


# ---- the real CLI ----------------------------------------------------------------------------------


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_script("model.py", *args)


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
    assert from_cli.metadata.cutoff == loaded.metadata.cutoff
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


def test_commands_that_do_not_run_the_model_start_without_its_libraries(model_dir: Path, tmp_path: Path) -> None:
    """Listing versions, reading a portfolio or refusing a bad option need neither scikit-learn nor Dask: about
    1.5 s of each start, here as a quick answer."""
    for args in (
        ("list", "--model-dir", model_dir),
        ("portfolio", "--scores-dir", tmp_path),
        ("train", "--data-dir", tmp_path, "--model-dir", tmp_path, "--max-train-customers", "10"),
    ):
        done = run_script("model.py", *args, PYTHONPROFILEIMPORTTIME="1")
        imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import")}
        assert "clv.cli" in imported, done.stderr[-500:]  # the import times were written
        assert not {"sklearn", "dask", "distributed"} & imported, args[0]


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--data-dir", "{bank}", "--model-dir", "{models}", "--cutoff", "2030-01-01"],
        ["train", "--data-dir", "{missing}", "--model-dir", "{models}"],
        ["train", "--data-dir", "{bank}", "--model-dir", "{models}", "--horizon-months", "0"],
        ["train", "--data-dir", "{bank}", "--model-dir", "{models}", "--max-train-customers", "10"],
        ["train", "--data-dir", "{bank}", "--model-dir", "{models}", "--memory-limit", "lots"],
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
    horizon, rate, cutoff = meta.horizon_months, meta.discount_rate, meta.cutoff
    every = rows_at(
        bank, [*meta.rows.cutoffs, dates.add_months(cutoff, -6), dates.add_months(cutoff, -9)], horizon, rate
    )
    test = held_out(every.customer_id, meta.seed)
    assert (test & (every.cutoff == dates.to_day(cutoff))).sum() == meta.rows.test  # training's held-out customers
    return every.take(test)


def test_the_stored_metrics_have_one_stable_shape(loaded: artifacts.LoadedModel) -> None:
    stored = loaded.metadata.metrics
    for name in ("model", "model_without_ledger", "baseline_last12", "baseline_mean", "oracle"):
        assert set(getattr(stored, name).model_dump()) >= METRIC_KEYS, name
    assert stored.model.interval_coverage is not None
    assert stored.model.normalized_gini > stored.baseline_mean.normalized_gini + 0.5


def test_the_model_beats_the_last_12_months_on_held_out_customers(
    loaded: artifacts.LoadedModel, held_out_rows: Rows
) -> None:
    X, y = held_out_rows.X, held_out_rows.y
    assert y.size > 400
    meta = loaded.metadata
    predicted = loaded.model.predict(X)
    naive = last12_baseline(X, meta.horizon_months, meta.discount_rate)
    assert metrics.normalized_gini(y, predicted) > metrics.normalized_gini(y, naive) + 0.01
    # Decile calibration is not asserted here: on this 1,200-customer bank the model trains on ~700
    # customers and its top decile falls short (the README gives the default-bank figures).


def test_interval_coverage_is_near_nominal_on_held_out_customers(
    loaded: artifacts.LoadedModel, held_out_rows: Rows
) -> None:
    assert 0.70 <= loaded.metadata.metrics.model.interval_coverage <= 0.90
    low, high = loaded.model.predict_interval(held_out_rows.X)
    covered = (held_out_rows.y >= low) & (held_out_rows.y <= high)
    assert 0.70 <= covered.mean() <= 0.90


def test_evaluate_on_the_training_data_reports_the_held_out_customers_of_training(
    loaded: artifacts.LoadedModel, bank_dir: Path
) -> None:
    """`python model.py evaluate` on the training folder must judge the customers training held out,
    so its figures are the train report's, not figures on customers the model learned from."""
    result = evaluate_saved(loaded.model, loaded.metadata, bank_dir)
    assert result["test_customers"] == loaded.metadata.test_customers
    stored = loaded.metadata.metrics.model_dump()
    for name in ("model", "baseline_last12"):
        for key in ("normalized_gini", "decile_mape", "mae"):
            assert result["metrics"][name][key] == pytest.approx(stored[name][key]), (name, key)
