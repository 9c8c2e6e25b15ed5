"""The churn probability: its label as docs/domain.md defines it, the fitted and calibrated probability, its
held-out metrics on the model card, and null for a customer who had already left."""

from __future__ import annotations

import datetime as dt
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clv.batch.scoring import GONE, score_bank
from clv.common import dates
from clv.data.bank import bank_from_frames, load_bank
from clv.model import artifacts
from clv.model.estimator import BankingCLVModel
from clv.model.labels import churned
from clv.model.metrics import churn_report
from clv.model.protocol import churn_labels
from clv.model.training import train_and_save

T = dt.date(2023, 12, 31)


def products_bank():
    """Customer 1 keeps a product past T + 12 months, 2 closes its last one inside them, 3 had left before T,
    4 closes one of two products and keeps the other."""
    customers = pd.DataFrame({"customer_id": [1, 2, 3, 4]})
    products = pd.DataFrame(
        {
            "customer_id": [1, 2, 3, 4, 4],
            "product_id": [10, 20, 30, 40, 41],
            "product_type": ["Checking"] * 5,
            "start_date": pd.to_datetime(["2020-01-01"] * 5),
            "end_date": pd.to_datetime([None, "2024-06-30", "2023-05-01", "2024-03-31", None]),
            "status": ["Active", "Closed", "Closed", "Closed", "Active"],
        }
    )
    transactions = pd.DataFrame(
        {"customer_id": [1, 2, 3, 4], "transaction_date": pd.to_datetime(["2023-11-01"] * 4), "amount": [10.0] * 4}
    )
    return bank_from_frames(customers, transactions, products)


def test_with_products_churn_is_holding_none_twelve_months_on_of_those_holding_one() -> None:
    bank = products_bank()
    label = dict(zip(bank.customer_id, churned(bank, dates.to_day(T), 12), strict=True))
    assert label[1] == 0 and label[2] == 1 and label[4] == 0
    assert np.isnan(label[3])  # had left already: cannot leave again
    # over 3 months customer 2 has not left yet
    assert churned(bank, dates.to_day(T), 3)[list(bank.customer_id).index(2)] == 0


def test_a_purchase_log_gets_the_inactivity_definition() -> None:
    rows = [
        (7, "2023-12-01", 50.0),
        (7, "2024-05-01", 20.0),
        (8, "2023-12-01", 50.0),
        (8, "2024-05-01", -20.0),
        (9, "2023-10-01", 5.0),
        (9, "2025-01-15", 5.0),
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "transaction_date", "amount"])
    frame["transaction_date"] = pd.to_datetime(frame["transaction_date"])
    bank = bank_from_frames(None, frame)
    label = dict(zip(bank.customer_id, churned(bank, dates.to_day(T), 12), strict=True))
    # 7 brought money within the 12 months; 8 only took some out; 9 came back after them
    assert label == {7: 0.0, 8: 1.0, 9: 1.0}


def test_the_metrics_follow_their_definitions() -> None:
    churned_ = np.array([0, 0, 1, 1, 0, 1, 0, 0, 0, 1], float)
    p = np.array([0.05, 0.15, 0.85, 0.95, 0.05, 0.55, 0.15, 0.45, 0.05, 0.95])
    report = churn_report(churned_, p)
    assert report["brier"] == pytest.approx(np.mean((p - churned_) ** 2))
    assert report["brier_skill"] == pytest.approx(1 - report["brier"] / (0.4 * 0.6))
    assert report["auc"] == 1.0
    bins = {row["bin"]: row for row in report["reliability"]}
    assert sum(row["customers"] for row in bins.values()) == 10
    assert bins[1]["customers"] == 3 and bins[1]["churn_rate"] == 0
    expected_ece = sum(r["customers"] * abs(r["mean_predicted"] - r["churn_rate"]) for r in bins.values()) / 10
    assert report["ece"] == pytest.approx(expected_ece)


def synthetic(n: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"engagement": rng.normal(size=n), "tenure": rng.integers(0, 200, n).astype(float)})
    leave = rng.random(n) < 1 / (1 + np.exp(2 + 1.5 * X["engagement"].to_numpy()))
    y = np.where(leave, 0.0, 100 + 50 * X["engagement"].to_numpy())
    label = leave.astype(float)
    label[:50] = np.nan  # rows that cannot leave
    return X, y, label, np.arange(n) // 2


def test_the_estimator_learns_a_calibrated_churn_probability_that_survives_pickling() -> None:
    X, y, label, groups = synthetic()
    model = BankingCLVModel(n_estimators=40, random_state=0).fit(X, y, groups=groups, churned=label)
    test_X, _, test_label, _ = synthetic(seed=1)
    p = model.predict_churn(test_X)
    assert ((p >= 0) & (p <= 1)).all()
    known = ~np.isnan(test_label)
    report = churn_report(test_label[known], p[known])
    assert report["auc"] > 0.7 and report["ece"] < 0.05
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict_churn(test_X), p)
    np.testing.assert_array_equal(again.predict_all(test_X)["churn"], p)


def test_a_model_without_churn_labels_says_so_with_nan() -> None:
    X, y, _, groups = synthetic(400)
    model = BankingCLVModel(n_estimators=10, random_state=0).fit(X, y, groups=groups)
    assert model.churn_ is None and np.isnan(model.predict_churn(X)).all()


def test_churn_labels_of_one_kind_give_no_churn_probability_and_say_why() -> None:
    X, y, _, groups = synthetic(400)
    with pytest.warns(UserWarning, match="need customers who left and customers who stayed"):
        model = BankingCLVModel(n_estimators=10).fit(X, y, groups=groups, churned=np.zeros(len(y)))
    assert model.churn_ is None and np.isnan(model.predict_churn(X)).all()
    # one customer who left: either the fitted or the held-back rows have none, and the value is still fitted
    one = np.zeros(len(y))
    one[groups == groups[0]] = 1
    with pytest.warns(UserWarning, match="no churn probability"):
        model = BankingCLVModel(n_estimators=10).fit(X, y, groups=groups, churned=one)
    assert model.churn_ is None and np.isfinite(model.predict(X)).all()


def test_a_model_saved_before_churn_loads_without_one() -> None:
    X, y, label, groups = synthetic(400)
    model = BankingCLVModel(n_estimators=10, random_state=0).fit(X, y, groups=groups, churned=label)
    state = {k: v for k, v in model.__getstate__().items() if not k.startswith("churn_")}
    old = BankingCLVModel.__new__(BankingCLVModel)
    old.__setstate__(state)
    assert old.churn_ is None and np.isnan(old.predict_churn(X)).all()
    np.testing.assert_array_equal(old.predict(X), model.predict(X))  # the value: the same model's


def test_the_model_card_judges_the_churn_probability_against_the_oracle(loaded: artifacts.LoadedModel) -> None:
    churn = loaded.metadata.churn
    assert loaded.metadata.churn_months == 12
    for name in ("model", "model_without_ledger", "oracle"):
        metrics = getattr(churn, name)
        assert metrics.customers > 100 and 0 < metrics.base_rate < 1
        assert sum(row.customers for row in metrics.reliability) == metrics.customers
        assert 0 <= metrics.ece <= 1
    assert churn.model.auc > 0.55 and churn.model.brier_skill > 0  # better than the base rate; the oracle knows more
    assert churn.oracle.auc > churn.model.auc


def test_scores_carry_the_churn_probability_and_null_for_who_had_left(
    bank_dir: Path, loaded: artifacts.LoadedModel
) -> None:
    scores = score_bank(loaded.predictor, load_bank(bank_dir))
    gone = scores["driver_1"] == GONE
    assert gone.sum() > 20
    assert scores.loc[gone, "churn_probability"].isna().all()
    p = scores.loc[~gone, "churn_probability"]
    assert p.notna().all() and p.between(0, 1).all() and p.std() > 0


def test_churn_months_is_a_training_option(bank_dir: Path, loaded: artifacts.LoadedModel, tmp_path: Path) -> None:
    _, meta = train_and_save(bank_dir, tmp_path / "models", churn_months=6)
    assert meta.churn_months == 6 and meta.cutoff == loaded.metadata.cutoff
    # the same held-out customers: leaving within 6 months is rarer than within 12
    assert meta.churn.model.customers == loaded.metadata.churn.model.customers
    assert meta.churn.model.base_rate < loaded.metadata.churn.model.base_rate


def test_labels_where_nobody_left_train_without_a_churn_probability(caplog: pytest.LogCaptureFixture) -> None:
    assert churn_labels(np.array([0.0, np.nan, 0.0])) is None
    assert "nobody left" in caplog.text
    labels = np.array([0.0, 1.0, np.nan])
    assert churn_labels(labels) is labels
