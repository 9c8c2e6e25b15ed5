"""Benchmark of the inactivity churn probability on a real purchase log (issue 15): CDNOW, 23,570 customers who
first bought in the first quarter of 1997, their CD purchases to June 1998.

The model is trained as the README says for a log without products: transactions only, value and churn over the 9
months after the cutoff 1997-09-30 (`--horizon-months 9`, the churn label then is "no money in during the 9
months"). On the same held-out customers it is judged against BG/NBD (Fader, Hardie and Lee 2005, fitted by the
`lifetimes` package on every customer's purchases up to the cutoff), whose P(no purchase in the 9 months | history)
= 1 - P(alive) + P(alive) x ((alpha + T) / (alpha + T + t)) ** (r + x).

Targets: the model's churn probability ranks better than BG/NBD's (AUC), with ECE <= 0.03.

Run `python bench/bench_purchase_log.py` (about a minute). The log ships inside the `lifetimes` wheel, installed
from PyPI by requirements-dev.txt: nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from common import verdict

from clv.common.cluster import LocalRunner
from clv.data.layout import open_bank
from clv.model import metrics
from clv.model.evaluation import judge
from clv.model.training import train

CUTOFF = dt.date(1997, 9, 30)
MONTHS = 9  # the cutoff to the log's last day, 1998-06-30
TARGET_ECE = 0.03


def cdnow() -> pd.DataFrame:
    """CDNOW_master.txt as the contract's transactions: customer_id, transaction_date, amount (dollars)."""
    with resources.files("lifetimes.datasets").joinpath("CDNOW_master.txt").open() as text:
        raw = pd.read_csv(text, sep=r"\s+", header=0, names=["customer_id", "date", "cds", "amount"])
    dates = pd.to_datetime(raw["date"].astype(str), format="%Y%m%d")
    return pd.DataFrame({"customer_id": raw["customer_id"], "transaction_date": dates.dt.date, "amount": raw["amount"]})


def bgnbd_no_purchase(log: pd.DataFrame, customers: np.ndarray, days: int) -> np.ndarray:
    """BG/NBD's probability that each of `customers` buys nothing in the `days` after the cutoff, from the purchases
    up to it (a model fitted on every customer's calibration period, in days)."""
    from lifetimes import BetaGeoFitter
    from lifetimes.utils import summary_data_from_transaction_data

    before = log[pd.to_datetime(log["transaction_date"]) <= pd.Timestamp(CUTOFF)]
    summary = summary_data_from_transaction_data(
        before, "customer_id", "transaction_date", observation_period_end=pd.Timestamp(CUTOFF), freq="D"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lifetimes' own deprecation notices about pandas
        fitted = BetaGeoFitter(penalizer_coef=0.0).fit(summary["frequency"], summary["recency"], summary["T"])
        alive = fitted.conditional_probability_alive(summary["frequency"], summary["recency"], summary["T"])
    r, alpha = fitted.params_["r"], fitted.params_["alpha"]
    silent = ((alpha + summary["T"]) / (alpha + summary["T"] + days)) ** (r + summary["frequency"])
    p = pd.Series(1 - alive + alive * silent, index=summary.index)
    return p.reindex(customers).to_numpy(np.float64)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    log = cdnow()
    print(
        f"CDNOW: {log['customer_id'].nunique():,} customers, {len(log):,} purchases, "
        f"{log['transaction_date'].min()} to {log['transaction_date'].max()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cdnow"
        folder.mkdir()
        log.to_csv(folder / "transactions.csv", index=False)
        started = time.perf_counter()
        result = train(folder, cutoff=CUTOFF, horizon_months=MONTHS, churn_months=MONTHS, horizons=(MONTHS,))
        print(
            f"trained in {time.perf_counter() - started:.1f} s at {result.cutoff}, value and churn over {MONTHS} months"
        )
        scores, _ = judge(
            open_bank(folder),
            LocalRunner(),
            result.model,
            CUTOFF,
            MONTHS,
            0.1,
            42,
            importance=False,
            churn_months=MONTHS,
        )
    known = scores["churned"].notna() & scores["churn_probability"].notna()
    scores = scores[known]
    churned = scores["churned"].to_numpy()
    days = (pd.Timestamp(1998, 6, 30) - pd.Timestamp(CUTOFF)).days
    rival = bgnbd_no_purchase(log, scores["customer_id"].to_numpy(), days)
    ours = metrics.churn_report(churned, scores["churn_probability"].to_numpy())
    theirs = metrics.churn_report(churned, rival)
    print(f"\n{scores.shape[0]:,} held-out customers, {churned.mean():.1%} bought nothing in the {MONTHS} months after")
    print(f"{'':22s}{'auc':>8s}{'ece':>8s}{'brier':>8s}{'skill':>8s}")
    for name, m in (("model (inactivity)", ours), ("BG/NBD P(no purchase)", theirs)):
        print(f"{name:22s}{m['auc']:>8.4f}{m['ece']:>8.4f}{m['brier']:>8.4f}{m['brier_skill']:>8.4f}")
    checks = [
        (f"ranks better than BG/NBD (AUC {ours['auc']:.4f} vs {theirs['auc']:.4f})", ours["auc"] > theirs["auc"]),
        (f"ECE <= {TARGET_ECE} ({ours['ece']:.4f})", ours["ece"] <= TARGET_ECE),
    ]
    print()
    for text, ok in checks:
        print(f"{verdict(ok):>9s}  {text}")


if __name__ == "__main__":
    main()
