"""Scoring a whole bank from its files: generate, train, score; a transactions-only log; as-of rules."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clv.batch.scoring import GONE, score_bank
from clv.data.bank import load_bank
from clv.model import artifacts
from clv.model.training import train_and_save
from tests.servers import run_script

COLUMNS = ["customer_id", "predicted_clv", "clv_low", "clv_high", "confidence_score"]


def score_cli(data_dir: Path, model_dir: Path, output: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_script("model.py", "score", "--data-dir", data_dir, "--model-dir", model_dir, "--output", output, *extra)


def test_generate_train_score_round_trip(bank_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "out" / "predictions.csv"
    run = score_cli(bank_dir, model_dir, output)
    assert run.returncode == 0, run.stderr
    scores = pd.read_csv(output)
    customers = pd.read_csv(bank_dir / "customers.csv", parse_dates=["join_date"])
    assert list(scores.columns[:5]) == COLUMNS
    assert {f"driver_{k}" for k in (1, 2, 3)} <= set(scores.columns)
    # everyone who had joined by the data's last date, once each
    assert sorted(scores["customer_id"]) == sorted(customers["customer_id"])
    assert (scores["clv_low"] <= scores["predicted_clv"]).all()
    assert (scores["predicted_clv"] <= scores["clv_high"]).all()
    assert scores["confidence_score"].between(0, 1).all()
    # customers who closed every product get exactly zero and say why
    products = pd.read_csv(bank_dir / "products.csv")
    closed = products.groupby("customer_id")["end_date"].apply(lambda s: s.notna().all())
    gone = scores.set_index("customer_id").loc[closed[closed].index]
    assert len(gone) > 20
    assert (gone["predicted_clv"] == 0).all() and (gone["driver_1"] == GONE).all()
    active = scores[~scores["customer_id"].isin(closed[closed].index)]
    assert active["predicted_clv"].std() > 0 and active["driver_1"].notna().all()


def test_cli_and_library_give_the_same_numbers(bank_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "p.csv"
    assert score_cli(bank_dir, model_dir, output).returncode == 0
    from_cli = pd.read_csv(output)
    from_lib = score_bank(artifacts.load(model_dir).predictor, load_bank(bank_dir))
    np.testing.assert_allclose(from_cli["predicted_clv"], from_lib["predicted_clv"], atol=0.006)


def test_as_of_before_a_join_date_leaves_the_customer_out(bank_dir: Path, loaded: artifacts.LoadedModel) -> None:
    customers = pd.read_csv(bank_dir / "customers.csv", parse_dates=["join_date"])
    as_of = dt.date(2022, 6, 30)
    scores = score_bank(loaded.predictor, load_bank(bank_dir), as_of)
    joined = customers.loc[customers["join_date"] <= pd.Timestamp(as_of), "customer_id"]
    assert sorted(scores["customer_id"]) == sorted(joined)
    assert len(scores) < len(customers)


@pytest.fixture(scope="module")
def retail_dir(bank_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A purchase log with only the three required columns, as a retailer would bring it."""
    out = tmp_path_factory.mktemp("retail")
    log = pd.read_csv(bank_dir / "transactions.csv", usecols=["customer_id", "transaction_date", "amount"])
    log.to_csv(out / "transactions.csv", index=False)
    return out


def test_a_transactions_only_folder_trains_and_scores(retail_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    _, meta = train_and_save(retail_dir, models)
    metrics = meta.metrics
    assert metrics.model.normalized_gini > metrics.baseline_last12.normalized_gini
    assert meta.params["target"] == "auto"
    output = tmp_path / "retail.csv"
    run = score_cli(retail_dir, models, output, "--as-of", "2024-06-30")
    assert run.returncode == 0, run.stderr
    scores = pd.read_csv(output)
    log = pd.read_csv(retail_dir / "transactions.csv", parse_dates=["transaction_date"])
    seen = log.loc[log["transaction_date"] <= "2024-06-30", "customer_id"].unique()
    assert sorted(scores["customer_id"]) == sorted(seen)
    assert scores["predicted_clv"].notna().all()
