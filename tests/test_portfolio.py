"""The portfolio of a scoring run: kept runs, portfolio.json's sums against the scores, the comparison of two runs,
and GET /portfolio; run as the README says (`python model.py score`, `python model.py portfolio`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from api import create_app
from clv.batch.portfolio import AT_RISK, SEGMENTS, Portfolio
from clv.service.settings import Settings
from tests.servers import run_script


def score(bank_dir: Path, model_dir: Path, scores_dir: Path, *args: str) -> Path:
    done = run_script(
        "model.py",
        "score",
        "--data-dir",
        bank_dir,
        "--model-dir",
        model_dir,
        "--scores-dir",
        scores_dir,
        "--quiet",
        *args,
    )
    assert done.returncode == 0, done.stderr
    return scores_dir / "latest"


@pytest.fixture(scope="module")
def run(bank_dir: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return score(bank_dir, model_dir, tmp_path_factory.mktemp("scores"))


@pytest.fixture(scope="module")
def result(run: Path) -> Portfolio:
    return Portfolio.model_validate_json((run / "portfolio.json").read_bytes())


@pytest.fixture(scope="module")
def scores(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / "scores.parquet")


def test_a_run_is_kept_in_its_own_folder_and_latest_points_to_it(run: Path, result: Portfolio, loaded) -> None:
    assert run.is_symlink() and os.readlink(run).startswith("run_") and result.run == os.readlink(run)
    assert sorted(p.name for p in run.iterdir()) == ["portfolio.json", "scores.parquet"]
    assert len(list((run / "scores.parquet").iterdir())) == 1  # a file a part: the flat folder is one part
    assert (
        result.model_version == loaded.version and result.data_fingerprint and result.as_of.isoformat() == "2024-12-31"
    )
    assert not [p for p in run.parent.iterdir() if p.name.startswith(".")]  # nothing half-written left


def test_segments_add_up_to_the_totals(result: Portfolio) -> None:
    assert set(result.segments) == set(SEGMENTS)
    for kind, rows in result.segments.items():
        assert sum(r.customers for r in rows) == result.customers, kind
        assert sum(r.value for r in rows) == pytest.approx(result.horizons[0].total, abs=0.01 * len(rows)), kind
        assert sum(r.value_at_risk for r in rows) == pytest.approx(result.value_at_risk, abs=0.01 * len(rows)), kind
    assert {r.segment for r in result.segments["region"]} <= {"North", "South", "East", "West", "unknown"}


def test_the_totals_and_the_value_at_risk_are_the_scores(result: Portfolio, scores: pd.DataFrame) -> None:
    assert result.customers == len(scores)
    for h in result.horizons:
        column = "predicted_clv" if h.months == result.headline_months else f"clv_{h.months}m"
        assert h.total == pytest.approx(scores[column].sum(), abs=0.01)
        assert h.low < h.total < h.high
        low, high = ("clv_low", "clv_high") if column == "predicted_clv" else (f"{column}_low", f"{column}_high")
        assert h.high - h.low < (scores[high] - scores[low]).sum()  # the sum's interval, not the intervals' sum
    at_risk = scores["predicted_clv"].clip(lower=0) * scores["churn_probability"].fillna(0)
    assert result.value_at_risk == pytest.approx(at_risk.sum(), abs=0.01)
    top = scores.assign(at_risk=at_risk.round(2)).sort_values(["at_risk", "customer_id"], ascending=[False, True])
    assert [r.customer_id for r in result.at_risk] == top["customer_id"].head(AT_RISK).tolist()
    first = result.at_risk[0]
    row = scores.set_index("customer_id").loc[first.customer_id]
    assert (first.clv, first.churn_probability, first.driver) == (
        row["predicted_clv"],
        row["churn_probability"],
        row["driver_1"],
    )


def test_the_deciles_are_the_concentration_of_the_scores(result: Portfolio, scores: pd.DataFrame) -> None:
    counts = [d.customers for d in result.deciles]
    assert sum(counts) == len(scores) and max(counts) - min(counts) <= 1
    assert sum(d.share for d in result.deciles) == pytest.approx(1, abs=1e-4)
    exact = np.sort(scores["predicted_clv"].to_numpy())[::-1]
    bounds = np.cumsum([0, *counts])
    for d, lo, hi in zip(result.deciles, bounds[:-1], bounds[1:], strict=True):
        assert d.value == pytest.approx(exact[lo:hi].sum(), rel=0.011, abs=1.0), d.decile
    assert result.deciles[0].share > 0.3  # a bank's value is concentrated


def test_an_output_file_gets_its_portfolio_beside_it(bank_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    done = run_script(
        "model.py",
        "score",
        "--data-dir",
        bank_dir,
        "--model-dir",
        model_dir,
        "--output",
        tmp_path / "out" / "scores.csv",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["portfolio.json", "scores.csv"]
    assert json.loads((tmp_path / "out" / "portfolio.json").read_text())["run"] == "scores.csv"


def test_two_runs_compare_by_segment_decile_and_at_risk_list(bank_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    scores_dir = tmp_path / "scores"
    first = os.readlink(score(bank_dir, model_dir, scores_dir, "--as-of", "2024-06-30"))
    second = os.readlink(score(bank_dir, model_dir, scores_dir))
    assert first != second and os.readlink(scores_dir / "latest") == second
    done = run_script("model.py", "portfolio", "--scores-dir", scores_dir, "--against", first, "--json")
    assert done.returncode == 0, done.stderr
    change = json.loads(done.stdout)
    assert (change["run"], change["against"]) == (second, first)
    assert set(change["segments"]) == set(SEGMENTS)
    region = change["segments"]["region"]
    assert sum(r["change"] for r in region) == pytest.approx(change["value"]["change"], abs=0.05)
    moved = change["moved_deciles"]
    assert moved["customers"] >= len(moved["largest"]) > 0
    assert all(abs(r["decile_after"] - r["decile_before"]) >= 2 for r in moved["largest"])
    assert set(change["at_risk"]["entered"]).isdisjoint(change["at_risk"]["left"])
    table = run_script("model.py", "portfolio", "--scores-dir", scores_dir, "--against", first)
    assert table.returncode == 0 and "moved 2 deciles or more" in table.stdout and "at-risk list" in table.stdout
    shown = run_script("model.py", "portfolio", "--scores-dir", scores_dir)
    assert shown.returncode == 0 and "value at risk" in shown.stdout and "product_mix" in shown.stdout


def test_a_missing_run_is_refused_in_one_line(tmp_path: Path) -> None:
    done = run_script("model.py", "portfolio", "--scores-dir", tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"model.py portfolio: error: {tmp_path}: no scoring run yet; `python model.py score` makes one"
    ]
    done = run_script("model.py", "portfolio", "--scores-dir", tmp_path, "--run", "run_nope")
    assert done.returncode == 2 and "no such scoring run" in done.stderr


# ---- GET /portfolio -----------------------------------------------------------------------------


def test_the_service_serves_the_latest_run_typed_and_follows_a_new_one(
    settings: Settings, run: Path, bank_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    scores_dir = tmp_path / "scores"
    with TestClient(create_app(settings.model_copy(update={"scores_dir": scores_dir}))) as client:
        missing = client.get("/portfolio")
        assert missing.status_code == 404 and "python model.py score" in missing.json()["detail"]
        score(bank_dir, model_dir, scores_dir)
        served = client.get("/portfolio")
        assert served.status_code == 200
        assert served.json() == json.loads((scores_dir / "latest" / "portfolio.json").read_text())
        later = score(bank_dir, model_dir, scores_dir, "--as-of", "2024-06-30")
        assert client.get("/portfolio").json()["run"] == os.readlink(later)
        schema = client.get("/openapi.json").json()
        responses = schema["paths"]["/portfolio"]["get"]["responses"]
        assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Portfolio")
        assert responses["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/Problem")
        assert {"horizons", "value_at_risk", "deciles", "segments", "at_risk"} <= set(
            schema["components"]["schemas"]["Portfolio"]["properties"]
        )
