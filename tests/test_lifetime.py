"""Value over several horizons and the monthly curve (clv.model.lifetime): the curve sums to each horizon, survival
never rises, the card says which horizons were judged, and every place a prediction goes carries them."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from api import create_app
from clv.batch.scoring import horizon_columns
from clv.model import artifacts
from clv.model.lifetime import Lifetime
from clv.service.settings import Settings
from clv.synthetic import generator
from tests.conftest import resave
from tests.servers import run_script
from tests.test_backtest import FIVE_YEARS

RNG = np.random.default_rng(7)
N = 2_000
POINT = RNG.normal(300, 400, N)
CHURN = RNG.uniform(0, 1, N)
LIFETIME = Lifetime((12, 36, 60), 12, 0.1, reversion=0.97, settled=20.0)


def test_the_discounted_curve_sums_to_every_horizon_and_to_the_headline_exactly() -> None:
    curve = LIFETIME.curve(POINT, CHURN)
    low, high = POINT - 100, POINT + 150
    values = LIFETIME.values(POINT, low, high, CHURN, None)
    for months, (value, lo, hi) in values.items():
        np.testing.assert_allclose(curve["cumulative_clv"][:, months - 1], value, rtol=0, atol=1e-6)
        assert (lo <= value).all() and (value <= hi).all()
    np.testing.assert_allclose(values[12][0], POINT, rtol=0, atol=1e-9)  # the headline is the model's own value
    # the expected margin discounted is what the cumulative value adds each month
    step = np.diff(np.column_stack([np.zeros(N), curve["cumulative_clv"]]), axis=1)
    np.testing.assert_allclose(step, curve["expected_margin"] * 1.1 ** (-curve["month"] / 12), atol=1e-9)


def test_survival_starts_below_one_never_rises_and_meets_the_churn_probability() -> None:
    survival = LIFETIME.curve(POINT, CHURN)["survival"]
    assert ((survival >= 0) & (survival <= 1)).all()
    assert (np.diff(survival, axis=1) <= 1e-15).all()
    np.testing.assert_allclose(survival[:, 11], 1 - np.minimum(CHURN, 1 - 1e-9), atol=1e-9)  # P(still one at month 12)


def test_without_a_churn_probability_a_customer_stays_and_the_margin_level_holds() -> None:
    plain = Lifetime((12, 36), 12, 0.0)
    value = plain.values(np.array([120.0]), np.array([60.0]), np.array([180.0]), np.array([np.nan]), None)[36]
    np.testing.assert_allclose([v[0] for v in value], [360.0, 180.0, 540.0])  # 10 a month, 36 months, band x3


def test_the_fitted_reversion_recovers_the_one_that_made_the_values() -> None:
    months = 36
    truth = Lifetime((12, months), 12, 0.1, reversion=0.95, settled=30.0)
    actual = truth.value(POINT, CHURN, months)
    fitted = Lifetime((12, months), 12, 0.1).fit_reversion(POINT, CHURN, actual, months)
    assert fitted.reversion == pytest.approx(0.95) and fitted.settled == pytest.approx(30.0, abs=1e-6)


def test_horizons_must_be_positive_and_distinct() -> None:
    for horizons in ((), (12, 0), (12, 12)):
        with pytest.raises(ValueError, match="horizons"):
            Lifetime(horizons, 12, 0.1)


# ---- the trained model ------------------------------------------------------------------------


def test_the_card_says_which_horizons_were_judged_and_which_extrapolated(loaded: artifacts.LoadedModel) -> None:
    """The session's bank (2021-2024) reaches 24 months back from its last year, not 36: those are extrapolated."""
    horizons = {h.months: h for h in loaded.metadata.horizons}
    assert list(horizons) == [12, 24, 36, 60]
    assert horizons[12].judged and horizons[12].cutoff == loaded.metadata.cutoff
    assert horizons[12].model == loaded.metadata.metrics.model
    judged = horizons[24]
    assert judged.judged and not judged.served and judged.cutoff.isoformat() == "2022-12-31"
    assert 0 < judged.customers < loaded.metadata.test_customers  # the half of the held-out that judges
    assert judged.model.normalized_gini > judged.baseline_annuity.normalized_gini - 0.2
    for months in (36, 60):
        assert horizons[months].served and not horizons[months].judged and horizons[months].extrapolated_from == 24
    assert all(h.against_oracle is not None for h in horizons.values() if h.served)  # the bank carries its oracle
    assert loaded.model.lifetime_.judged == () and set(loaded.model.lifetime_.margins) == {36, 60}


def test_a_five_year_bank_judges_the_36_month_value_on_what_happened(tmp_path: Path) -> None:
    bank = tmp_path / "bank"
    generator.write_tables(generator.simulate(FIVE_YEARS), bank, config=FIVE_YEARS)
    done = run_script(
        "model.py", "train", "--data-dir", bank, "--model-dir", tmp_path / "models", "--horizons", "12,36,60", "--quiet"
    )
    assert done.returncode == 0, done.stderr
    metadata = artifacts.load(tmp_path / "models").metadata
    horizons = {h.months: h for h in metadata.horizons}
    assert horizons[36].judged and horizons[36].cutoff.isoformat() == "2021-12-31"
    assert 0 <= horizons[36].model.interval_coverage <= 1
    assert not horizons[60].judged and horizons[60].extrapolated_from == 36
    assert "extrapolated" in done.stdout and "36  2021-12-31" in done.stdout


def test_horizons_is_a_training_option_refused_in_one_line_when_wrong(bank_dir: Path, tmp_path: Path) -> None:
    for text, words in (("12,x", "is not a list of months"), ("12,0", "must be 1 to 120 months")):
        done = run_script("model.py", "train", "--data-dir", bank_dir, "--model-dir", tmp_path, "--horizons", text)
        assert done.returncode == 2 and words in done.stderr, done.stderr
        assert not any(tmp_path.iterdir())


# ---- everywhere a prediction goes ---------------------------------------------------------------


def test_the_api_answers_every_horizon_and_the_curve_when_asked(client: TestClient, example: dict) -> None:
    plain = client.post("/predict/clv", json=example).json()
    assert "curve" not in plain  # the default answer stays small
    assert [h["months"] for h in plain["horizons"]] == [12, 36, 60]
    headline = plain["horizons"][0]
    assert (headline["clv"], headline["low"], headline["high"]) == (
        plain["predicted_clv"],
        plain["clv_interval"]["low"],
        plain["clv_interval"]["high"],
    )
    asked = client.post("/predict/clv", params={"curve": "true"}, json=example).json()
    curve = asked["curve"]
    assert [p["month"] for p in curve] == list(range(1, 61))
    survival = [p["survival"] for p in curve]
    assert all(0 <= s <= 1 for s in survival) and survival == sorted(survival, reverse=True)
    for horizon in asked["horizons"]:
        assert curve[horizon["months"] - 1]["cumulative_clv"] == pytest.approx(horizon["clv"], abs=0.011)
    batch = client.post("/predict/clv/batch", params={"curve": "true"}, json={"customers": [example, example]}).json()
    assert all(len(p["curve"]) == 60 for p in batch["predictions"])


def test_a_customer_who_had_left_has_no_value_at_any_horizon_and_no_survival(client: TestClient, example: dict) -> None:
    gone = {
        **example,
        "products": [{**example["products"][0], "status": "Closed", "end_date": "2024-06-30"}],
        "as_of": "2024-12-31",
    }
    result = client.post("/predict/clv", params={"curve": "true"}, json=gone).json()
    assert result["churn_probability"] is None
    assert all(h["clv"] == h["low"] == h["high"] == 0 for h in result["horizons"])
    assert {p["survival"] for p in result["curve"]} == {0} and {p["cumulative_clv"] for p in result["curve"]} == {0}


def test_a_model_trained_before_horizons_answers_the_headline_and_refuses_a_curve(
    loaded: artifacts.LoadedModel, models: Path, settings: Settings, example: dict
) -> None:
    before = copy.deepcopy(loaded.model)  # the session's model stays as it is
    before.set_params(lifetime=None)
    resaved = resave(dataclasses.replace(loaded, model=before), models)
    with TestClient(create_app(settings.model_copy(update={"model_dir": models}))) as client:
        assert client.get("/health").json()["model_version"] in resaved.name
        result = client.post("/predict/clv", json=example).json()
        assert [h["months"] for h in result["horizons"]] == [12]
        refused = client.post("/predict/clv", params={"curve": "true"}, json=example)
        assert refused.status_code == 409 and "trained before horizons" in refused.json()["detail"]


def test_scores_carry_every_horizon_and_the_curve_sums_to_them(bank_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    done = run_script(
        "model.py",
        "score",
        "--data-dir",
        bank_dir,
        "--model-dir",
        model_dir,
        "--output",
        tmp_path / "scores.csv",
        "--curve",
        tmp_path / "curve.parquet",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    scores = pd.read_csv(tmp_path / "scores.csv").set_index("customer_id")
    for months in (36, 60):
        value, low, high = (scores[c] for c in horizon_columns(months))
        assert (low <= value).all() and (value <= high).all()
    curve = pd.read_parquet(tmp_path / "curve.parquet")
    assert len(curve) == 60 * len(scores)
    for months, column in ((12, "predicted_clv"), (36, "clv_36m"), (60, "clv_60m")):
        at = curve[curve["month"] == months].set_index("customer_id")["cumulative_clv"]
        assert (at - scores[column]).abs().max() <= 0.011, column
    assert (curve.groupby("customer_id")["survival"].diff().dropna() <= 0).all()
