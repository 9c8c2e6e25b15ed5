"""Input drift (clv.model.monitoring): PSI by hand on made-up columns, then on generated banks and a trained model."""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clv.common import io
from clv.data.bank import load_bank
from clv.model import artifacts
from clv.model.estimator import BankingCLVModel
from clv.model.features import FEATURE_NAMES, LEDGER_FEATURES
from clv.model.monitoring import (
    EPSILON,
    DriftError,
    Profile,
    band,
    output_psi,
    plot_drift,
    psi,
    reference_profile,
)
from clv.model.protocol import rows_at
from clv.model.training import train_and_save
from clv.service.telemetry import RecentRows
from clv.synthetic import generator
from tests.servers import run_script

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def frame(**columns: np.ndarray | list[float]) -> pd.DataFrame:
    return pd.DataFrame({name: np.asarray(values, dtype=np.float64) for name, values in columns.items()})


def profile_of(**columns: np.ndarray | list[float]) -> Profile:
    X = frame(**columns)
    return reference_profile(X, np.zeros(len(X)))


def by_hand(expected: list[float], actual: list[float]) -> float:
    return sum((a - e) * math.log(a / e) for e, a in zip(expected, actual, strict=True))


def naive_psi(profile: Profile, X: pd.DataFrame) -> dict[str, float]:
    """PSI one feature at a time with np.searchsorted: what the vectorised version must agree with."""
    result = {}
    for h in profile.features:
        values = X[h.name].to_numpy(np.float64)
        bins = np.where(np.isnan(values), len(h.edges) + 1, np.searchsorted(np.asarray(h.edges), values, "left"))
        actual = np.maximum(np.bincount(bins, minlength=len(h.shares)) / len(values), EPSILON)
        expected = np.maximum(np.asarray(h.shares), EPSILON)
        result[h.name] = float(((actual - expected) * np.log(actual / expected)).sum())
    return result


# ---- the arithmetic, on hand-made columns ---------------------------------------------------------------


def test_identical_distributions_give_zero() -> None:
    rng = np.random.default_rng(0)
    X = frame(a=rng.normal(size=500), b=rng.exponential(size=500), c=rng.integers(0, 3, 500))
    predictions = rng.normal(size=500)
    report = psi(reference_profile(X, predictions), X, predictions)
    assert report.features == {"a": 0.0, "b": 0.0, "c": 0.0}
    assert report.prediction == 0.0
    assert report.rows == 500


def test_a_known_shift_gives_the_hand_computed_value() -> None:
    profile = reference_profile(frame(x=np.repeat([1, 2, 3, 4], 25)), np.zeros(100), bins=4)
    assert profile.features[0].edges == (1.0, 2.0, 3.0)  # bins ≤1, (1,2], (2,3], >3: a quarter each
    now = frame(x=np.repeat([1, 2, 3, 4], [40, 30, 20, 10]))
    # 0.15 ln 1.6 + 0.05 ln 1.2 + 0.05 ln 1.25 + 0.15 ln 2.5
    expected = 0.15 * math.log(1.6) + 0.05 * math.log(1.2) + 0.05 * math.log(1.25) + 0.15 * math.log(2.5)
    assert psi(profile, now).features["x"] == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.22822, abs=1e-5)
    assert band(expected) == "moderate"


def test_empty_bins_count_as_epsilon_so_psi_stays_finite() -> None:
    profile = profile_of(x=np.arange(1000))  # deciles of 100 values each
    upper_half = frame(x=np.arange(500, 1000))
    expected = 5 * 0.1 * math.log(2) + 5 * (EPSILON - 0.1) * math.log(EPSILON / 0.1)
    assert psi(profile, upper_half).features["x"] == pytest.approx(expected, rel=1e-12)


def test_missing_values_have_a_bin_of_their_own() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=1000)
    values[:200] = np.nan
    profile = profile_of(x=values, never=np.full(1000, np.nan))
    assert profile.features[0].shares[-1] == pytest.approx(0.2)
    assert profile.features[1].edges == () and profile.features[1].shares == (0.0, 1.0)
    assert psi(profile, frame(x=values, never=np.full(1000, np.nan))).features == {"x": 0.0, "never": 0.0}
    # 60% missing now: the missing bin goes 0.2 -> 0.6, each of the ten value bins 0.08 -> 0.04
    now = values.copy()
    now[:600] = np.nan
    report = psi(profile, frame(x=now, never=rng.normal(size=1000)))
    h = profile.features[0]
    value_bins = np.asarray(h.shares[:-1])
    actual = np.bincount(np.searchsorted(h.edges, now[600:], "left"), minlength=value_bins.size) / 1000
    assert report.features["x"] == pytest.approx(by_hand([*value_bins, 0.2], [*actual, 0.6]), rel=1e-9)
    assert report.features["x"] > 0.25
    # a column that had no values in training (no ledger) and has them now: significant, not an error
    assert band(report.features["never"]) == "significant"


def test_a_ledgerless_window_drifts_rather_than_fails() -> None:
    rng = np.random.default_rng(2)
    profile = profile_of(margin=rng.normal(size=400), age=rng.integers(18, 90, 400))
    report = psi(profile, frame(margin=np.full(400, np.nan), age=rng.integers(18, 90, 400)))
    assert report.band(report.features["margin"]) == "significant"
    assert report.band(report.features["age"]) == "stable"


def test_a_constant_column_has_a_bin_for_its_value() -> None:
    profile = profile_of(x=np.full(300, 5.0))
    assert psi(profile, frame(x=np.full(50, 5.0))).features["x"] == 0.0
    moved = psi(profile, frame(x=np.full(50, 7.0))).features["x"]
    assert moved == pytest.approx(by_hand([EPSILON, 1, EPSILON, EPSILON], [EPSILON, EPSILON, 1, EPSILON]))
    assert band(moved) == "significant"


def test_a_zero_heavy_count_gets_sensible_bins() -> None:
    counts = np.repeat([0, 1, 2, 3, 4], [920, 40, 20, 10, 10])
    h = profile_of(x=counts).features[0]
    assert h.edges == (0.0,)  # zeros, and everything above: no empty or duplicated bins
    assert h.shares == pytest.approx((0.92, 0.08, 0.0))
    now = np.repeat([0, 1, 3], [500, 300, 200])
    assert psi(profile_of(x=counts), frame(x=now)).features["x"] == pytest.approx(by_hand([0.92, 0.08], [0.5, 0.5]))


def test_a_binary_column_has_two_bins_and_no_empty_ones() -> None:
    flags = np.repeat([0.0, 1.0], [700, 300])  # 1 fills the top three deciles: a point mass at the maximum
    profile = profile_of(x=flags)
    assert profile.features[0].edges == (0.0,)
    assert profile.features[0].shares == pytest.approx((0.7, 0.3, 0.0))
    # the top bin is open: a 2 beyond the training maximum counts with the ones
    assert psi(profile, frame(x=np.repeat([0.0, 2.0], [700, 300]))).features["x"] == 0.0


def test_a_point_mass_inside_the_range_is_its_own_bin() -> None:
    rng = np.random.default_rng(3)
    margins = np.where(rng.random(2000) < 0.3, 0.0, rng.normal(size=2000))  # many months of exactly zero margin
    h = profile_of(x=margins).features[0]
    zero_bin = h.edges.index(0.0)
    assert h.edges[zero_bin - 1] == np.nextafter(0.0, -1.0)  # the bin (just below 0, 0] holds exactly the zeros
    assert h.shares[zero_bin] == pytest.approx(np.mean(margins == 0.0))
    assert all(share > 0 for share in h.shares[:-1])  # no empty bins left behind by collapsed edges


def test_values_outside_the_training_range_land_in_the_end_bins() -> None:
    reference = np.arange(1000.0)
    profile = profile_of(x=reference)
    now = reference.copy()
    now[:100], now[-100:] = -1e9, 1e9  # the bottom and top deciles, far past the range
    assert psi(profile, frame(x=now)).features["x"] == 0.0
    beyond = psi(profile, frame(x=np.full(100, 5000.0))).features["x"]  # all in the top bin
    assert beyond == pytest.approx(by_hand([0.1] * 10, [EPSILON] * 9 + [1.0]))


def test_vectorised_psi_agrees_with_one_feature_at_a_time() -> None:
    rng = np.random.default_rng(4)
    columns = {
        "normal": rng.normal(size=600),
        "counts": rng.poisson(0.3, 600),
        "binary": rng.random(600) < 0.2,
        "constant": np.full(600, 3.0),
        "never": np.full(600, np.nan),
        "gappy": np.where(rng.random(600) < 0.3, np.nan, rng.lognormal(size=600)),
    }
    profile = profile_of(**columns)
    now = frame(**{name: rng.permutation(values) * 1.3 + 0.1 for name, values in columns.items()})
    assert psi(profile, now).features == pytest.approx(naive_psi(profile, now), rel=1e-12)


def test_bands() -> None:
    assert [band(v) for v in (0.0, 0.0999, 0.1, 0.25, 0.2501, 3.0)] == [
        "stable",
        "stable",
        "moderate",
        "moderate",
        "significant",
        "significant",
    ]


def test_a_missing_column_is_an_error_naming_it() -> None:
    profile = profile_of(age=[30, 40, 50], income=[1e4, 2e4, 3e4])
    with pytest.raises(DriftError, match="'income'"):
        psi(profile, frame(age=[35, 45]))
    with pytest.raises(DriftError, match="3 predictions for 2 feature rows"):
        psi(profile, frame(age=[35, 45], income=[1e4, 2e4]), np.zeros(3))
    with pytest.raises(DriftError, match="no feature rows"):
        psi(profile, frame(age=[], income=[]))


def test_report_json_shape() -> None:
    profile = profile_of(x=np.arange(100), y=np.arange(100))
    report = psi(profile, frame(x=np.arange(100), y=np.arange(50, 150)), np.ones(100))
    data = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert data["features"]["x"] == 0.0 and data["bands"] == {"x": "stable", "y": "significant"}
    assert data["prediction"] == report.prediction and data["prediction_band"] == "significant"
    assert data["drifted"] == ["y"] and data["rows"] == 100 and data["reference_rows"] == 100


# ---- generated banks and a trained model --------------------------------------------------------------


@dataclass
class Reference:
    model: BankingCLVModel
    cutoff: dt.date
    horizon_months: int
    discount_rate: float
    data_dir: Path
    root: Path
    profile: Profile = field(init=False)

    def window(self, data_dir: Path) -> tuple[pd.DataFrame, np.ndarray]:
        """A bank's feature rows at the model's cutoff, with the model's predictions."""
        X = rows_at(load_bank(data_dir), [self.cutoff], self.horizon_months, self.discount_rate).X
        return X, self.model.predict(X)

    def variant(self, name: str) -> Path:
        """A copy of the reference bank to change."""
        out = self.root / name
        shutil.copytree(self.data_dir, out)
        return out


def generate(out: Path, seed: int) -> Path:
    generator.write_tables(generator.simulate(generator.Config(customers=1200, seed=seed)), out)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """A model trained on a 1,200-customer bank (seed 5), profiled on its rows at the model's cutoff."""
    root = tmp_path_factory.mktemp("drift")
    data_dir = generate(root / "seed5", seed=5)
    train_and_save(data_dir, root / "models")
    loaded = artifacts.load(root / "models")
    meta = loaded.metadata
    ref = Reference(loaded.model, meta.cutoff, meta.horizon_months, meta.discount_rate, data_dir, root)
    ref.profile = reference_profile(*ref.window(data_dir))
    return ref


@pytest.fixture(scope="module")
def shifted(reference: Reference) -> tuple[pd.DataFrame, np.ndarray]:
    """The reference bank with every income multiplied by 1.6 and every age raised by 12."""
    data_dir = reference.variant("shifted")
    customers = pd.read_csv(data_dir / "customers.csv")
    customers["income"] = (customers["income"] * 1.6).round().astype("int64")
    customers["age"] += 12
    customers.to_csv(data_dir / "customers.csv", index=False)
    return reference.window(data_dir)


def test_the_profile_records_every_feature_in_order(reference: Reference) -> None:
    assert reference.profile.feature_names == FEATURE_NAMES
    assert reference.profile.rows > 500


def test_the_same_bank_settings_with_another_seed_are_stable(reference: Reference) -> None:
    X, predictions = reference.window(generate(reference.root / "seed6", seed=6))
    report = psi(reference.profile, X, predictions)
    assert report.rows > 500
    assert max(report.features.values()) < 0.1, report.worst(5)
    assert report.prediction < 0.1


def test_a_shifted_population_is_significant_where_it_shifted(reference: Reference, shifted) -> None:
    X, predictions = shifted
    report = psi(reference.profile, X, predictions)
    assert report.features["income"] > 0.25
    assert report.features["age"] > 0.25
    unrelated = {name: value for name, value in report.features.items() if name not in ("income", "age")}
    assert max(unrelated.values()) < 0.1
    assert set(report.to_json()["drifted"]) == {"income", "age"}


def test_monitor_at_the_model_cutoff_is_stable_on_the_same_population_and_not_on_a_shifted_one(
    reference: Reference, tmp_path: Path
) -> None:
    """The saved reference (as of the model's cutoff alone) against a bank of the same settings and another
    seed, as `model.py monitor` reports it: every feature below 0.1, history_days included; a bank whose
    incomes and ages moved is still flagged."""
    same, moved = generate(tmp_path / "seed7", seed=7), reference.variant("moved")
    customers = pd.read_csv(moved / "customers.csv")
    customers["income"] = (customers["income"] * 1.6).round().astype("int64")
    customers["age"] += 12
    customers.to_csv(moved / "customers.csv", index=False)
    reports = {}
    for name, bank in {"same": same, "moved": moved}.items():
        done = run_script(
            "model.py",
            "monitor",
            "--data-dir",
            bank,
            "--model-dir",
            reference.root / "models",
            "--as-of",
            reference.cutoff,
            "--out",
            tmp_path / name,
            "--json",
        )
        assert done.returncode == 0, done.stderr
        reports[name] = json.loads(done.stdout)
    same_report = reports["same"]
    assert same_report["rows"] > 500 and same_report["drifted"] == [], same_report["features"]
    assert max(same_report["features"].values()) < 0.1 and same_report["features"]["history_days"] < 0.1
    assert reports["moved"]["features"]["income"] > 0.25 and reports["moved"]["features"]["age"] > 0.25


def test_a_bank_without_a_ledger_drifts_on_the_ledger_features(reference: Reference) -> None:
    data_dir = reference.variant("no_ledger")
    (data_dir / "customer_metrics.csv").unlink()
    report = psi(reference.profile, *reference.window(data_dir))
    assert min(report.features[name] for name in LEDGER_FEATURES) > 0.25
    transaction_features = [name for name in FEATURE_NAMES if name.startswith(("txn_count", "inflow", "outflow"))]
    assert max(report.features[name] for name in ["age", "income", *transaction_features]) < 0.1


def test_the_profile_survives_a_json_round_trip_exactly(reference: Reference, tmp_path: Path) -> None:
    path = tmp_path / "drift_profile.json"
    io.write_json(reference.profile.to_json(), path)
    json.loads(path.read_text(), parse_constant=pytest.fail)  # strict JSON: no NaN or Infinity
    again = Profile.from_json(path.read_text())
    assert again == reference.profile
    X, predictions = reference.window(reference.data_dir)
    assert psi(again, X.iloc[::3], predictions[::3]) == psi(reference.profile, X.iloc[::3], predictions[::3])
    with pytest.raises(DriftError, match="format"):
        Profile.from_json({**reference.profile.to_json(), "format": 0})


def test_plot_drift_writes_a_png_atomically(reference: Reference, shifted, tmp_path: Path) -> None:
    X, predictions = shifted
    report = psi(reference.profile, X, predictions)
    path = plot_drift(reference.profile, X, report, tmp_path / "drift.png", top=6)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["drift.png"]  # no temporary file left behind


def test_the_service_window_is_measured_against_the_profile_it_is_given(reference: Reference, shifted) -> None:
    """After a model swap the window is compared with the new model's reference, not a report kept from the old."""
    X, predictions = shifted
    recent = RecentRows(len(X), list(FEATURE_NAMES))
    recent.add(X.to_numpy(), predictions)
    ledger = tuple(reference.model.ledger_features)
    own = reference_profile(X, predictions)
    assert recent.report(reference.profile, ledger).features["income"] > 0.25
    assert recent.report(own, ledger).features["income"] < 0.1


def test_the_profile_covers_the_churn_probability_and_monitor_measures_it(
    loaded: artifacts.LoadedModel, bank_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    """The training rows' churn probabilities are profiled beside the prediction; the same bank at the model's
    cutoff does not drift on them, and a population twice as likely to leave does."""
    (churn,) = loaded.profile.outputs
    assert churn.name == "churn_probability" and sum(churn.shares) == pytest.approx(1)
    assert Profile.from_json(loaded.profile.to_json()) == loaded.profile
    done = run_script(
        "model.py",
        "monitor",
        "--data-dir",
        bank_dir,
        "--model-dir",
        model_dir,
        "--as-of",
        str(loaded.metadata.cutoff),
        "--out",
        tmp_path,
        "--json",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)["outputs"]["churn_probability"]
    assert 0 <= measured < 0.1
    X = rows_at(load_bank(bank_dir), [loaded.metadata.cutoff], 12, 0.1).X
    shifted = np.clip(loaded.model.predict_churn(X) * 2 + 0.1, 0, 1)
    assert output_psi(loaded.profile, {"churn_probability": shifted})["churn_probability"] > 0.25
