"""`model.py backtest`: the same training at several cutoffs of a five-year bank, each judged on the months after
it, with the population's drift between cutoffs; run as the README says."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from pathlib import Path

import pytest

from clv.common import dates
from clv.synthetic import generator
from tests.servers import run_script

FIVE_YEARS = generator.Config(customers=600, start=dt.date(2020, 1, 1), end=dt.date(2024, 12, 31), seed=3)


@pytest.fixture(scope="module")
def five_year_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("five_years")
    generator.write_tables(generator.simulate(FIVE_YEARS), out, config=FIVE_YEARS)
    return out


def test_a_five_year_bank_is_judged_at_three_cutoffs_or_more(five_year_bank: Path, tmp_path: Path) -> None:
    out = tmp_path / "backtest"
    done = run_script("model.py", "backtest", "--data-dir", five_year_bank, "--every", "12", "--out", out, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    rows = result["cutoffs"]
    assert len(rows) >= 3
    cutoffs = [dt.date.fromisoformat(row["cutoff"]) for row in rows]
    assert cutoffs == sorted(cutoffs) and cutoffs[-1] == dt.date(2023, 12, 31)
    assert all(dates.add_months(later, -12) == earlier for earlier, later in itertools.pairwise(cutoffs))
    for row in rows:
        assert row["horizon_months"] == 12 and row["test_customers"] > 50
        assert 0.5 < row["normalized_gini"] <= 1 and 0 <= row["interval_coverage"] <= 1
        assert 0 <= row["churn_ece"] <= 1 and 0 <= row["churn_auc"] <= 1
    # the first cutoff has nothing before it to drift from; each later one is compared with the one before
    assert rows[0]["psi_max"] is None
    assert all(row["psi_max"] >= 0 and row["psi_feature"] not in ("history_days", "tenure_months") for row in rows[1:])
    assert json.loads((out / "backtest.json").read_text()) == result
    assert (out / "backtest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_cutoff_whose_months_run_past_the_data_is_refused_in_one_line(five_year_bank: Path, tmp_path: Path) -> None:
    out = tmp_path / "backtest"
    done = run_script(
        "model.py", "backtest", "--data-dir", five_year_bank, "--cutoffs", "2023-06-30,2024-06-30", "--out", out
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "model.py backtest: error: --cutoffs 2024-06-30: the 12 months after it run past the data's last date "
        "2024-12-31; use 2023-12-31 or earlier"
    ]
    assert not out.exists()  # refused before any training, nothing written
