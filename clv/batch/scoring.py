"""Score a bank as of a date: one row per customer who had joined by then, with interval and drivers."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from clv.common import dates
from clv.common.cluster import Runner
from clv.common.io import atomic_folder, atomic_path
from clv.data.bank import Bank
from clv.data.layout import Source, part_name
from clv.model.artifacts import LoadedModel
from clv.model.attributions import driver_order
from clv.model.estimator import BankingCLVModel
from clv.model.features import FEATURE_NAMES, build_features
from clv.model.labels import eligible, former, joined
from clv.model.monitoring import DriftReport, drift

TOP_DRIVERS = 3
COLUMNS = (
    "customer_id", "predicted_clv", "clv_low", "clv_high", "confidence_score", "churn_probability",
    *(f"driver_{k}{end}" for k in range(1, TOP_DRIVERS + 1) for end in ("", "_contribution")),
)  # fmt: skip
GONE = "no open product"


def score_bank(model: BankingCLVModel, bank: Bank, as_of: dt.date | None = None) -> pd.DataFrame:
    """Predictions, 80% interval, confidence, churn probability and the top drivers. Customers who had closed
    every product by the as-of date bring nothing after (docs/domain.md): 0 with driver 'no open product', and no
    churn probability (empty: they cannot leave again)."""
    day = bank.last_day() if as_of is None else dates.to_day(as_of)
    keep = joined(bank, day)
    out = predict_rows(model, build_features(bank, day)[keep], former(bank, day)[keep])
    frame = pd.DataFrame({
        "customer_id": bank.customer_id[keep],
        "predicted_clv": out["point"].round(2),
        "clv_low": out["low"].round(2),
        "clv_high": out["high"].round(2),
        "confidence_score": out["confidence"].round(4),
        "churn_probability": out["churn"].round(4),
    })  # fmt: skip
    contrib = out["contrib"]
    top = driver_order(contrib, TOP_DRIVERS)
    names = np.asarray(FEATURE_NAMES, dtype=object)
    for k in range(TOP_DRIVERS):
        frame[f"driver_{k + 1}"] = np.where(out["gone"], GONE if k == 0 else "", names[top[:, k]])
        frame[f"driver_{k + 1}_contribution"] = np.take_along_axis(contrib, top[:, [k]], axis=1)[:, 0].round(2)
    return frame.sort_values("customer_id", kind="stable").reset_index(drop=True)


def predict_rows(model: BankingCLVModel, X: pd.DataFrame | np.ndarray, gone: np.ndarray) -> dict[str, np.ndarray]:
    """The model's answer for feature rows; a customer with no open product gets exactly 0, no drivers and no
    churn probability (NaN).
    The rows come from build_features, in FEATURE_NAMES' order, which the loaded model was verified to have."""
    out = model.predict_all(X, check_input=False)
    if gone.any():
        for key in ("point", "low", "high"):
            out[key] = np.where(gone, 0.0, out[key])
        out["confidence"] = np.where(gone, 1.0, out["confidence"])
        out["contrib"] = np.where(gone[:, None], 0.0, out["contrib"])
        out["churn"] = np.where(gone, np.nan, out["churn"])
    out["gone"] = gone
    return out


def score_part(source: Source, part: str, model: BankingCLVModel, as_of: dt.date, folder: Path, suffix: str) -> int:
    """Score one part of a bank into `folder/<part>.<suffix>` (Parquet or CSV without a header); the rows."""
    frame = score_bank(model, source.load(part)[0], as_of)
    path = folder / f"{part or part_name(0)}.{suffix}"
    with atomic_path(path) as tmp:
        if suffix == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False, header=False)
    return len(frame)


def write_scores(source: Source, runner: Runner, model: BankingCLVModel, as_of: dt.date | None, output: Path) -> int:
    """Score every part into `output`: a Parquet dataset (a folder of one file a part) when it ends in
    .parquet, else one CSV. Written beside `output` under a temporary name and renamed when complete."""
    as_of = as_of or dates.from_day(source.last_day)
    model = runner.share(model)
    if output.suffix == ".parquet":
        with atomic_folder(output) as folder:
            return sum(runner.map(score_part, source, label="scored", model=model, as_of=as_of, folder=folder,
                                  suffix="parquet"))  # fmt: skip
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as parts:
        rows = runner.map(score_part, source, label="scored", model=model, as_of=as_of, folder=Path(parts),
                          suffix="csv")  # fmt: skip
        _concatenate(sorted(Path(parts).glob("*.csv")), output)
    return sum(rows)


def _concatenate(parts: list[Path], output: Path) -> None:
    """The parts' rows under one header, as one file written whole or not at all."""
    with atomic_path(output) as tmp, tmp.open("wb") as out:
        out.write(f"{','.join(COLUMNS)}\n".encode())
        for part in parts:
            with part.open("rb") as piece:
                shutil.copyfileobj(piece, out, 1 << 20)


MONITOR_ROWS = 200_000  # a random sample this large measures a distribution to well under PSI 0.01


def monitor_rows(source: Source, part: str, model: BankingCLVModel, as_of: dt.date, share: float, seed: int):
    """A seeded sample (`share` of them) of a part's customers who count as of `as_of` (joined, not gone, as
    in training): their feature rows and predictions."""
    bank = source.load(part)[0]
    day = dates.to_day(as_of)
    keep = np.flatnonzero(eligible(bank, day))
    rng = np.random.default_rng([seed, source.parts.index(part)])
    keep = np.sort(rng.choice(keep, min(keep.size, max(1, round(share * keep.size))), replace=False))
    X = build_features(bank, day).iloc[keep].reset_index(drop=True)
    return X, model.predict(X)


def monitor(
    source: Source, runner: Runner, loaded: LoadedModel, as_of: dt.date | None, seed: int = 42
) -> tuple[DriftReport, pd.DataFrame]:
    """The input drift of a bank's customers as of a date against the model's training rows, with the rows."""
    X, predictions = monitored(source, runner, loaded.model, as_of or dates.from_day(source.last_day), seed)
    return drift(loaded.profile, X, predictions, tuple(loaded.model.ledger_features)), X


def monitored(
    source: Source, runner: Runner, model: BankingCLVModel, as_of: dt.date, seed: int = 42
) -> tuple[pd.DataFrame, np.ndarray]:
    """A seeded sample of the bank's customers who count as of `as_of` (at most MONITOR_ROWS of them, part by
    part): their feature rows and the model's predictions."""
    share = min(1.0, MONITOR_ROWS / max(1, source.customers_in(source.parts)))
    parts = runner.map(monitor_rows, source, label="monitored", model=runner.share(model), as_of=as_of,
                       share=share, seed=seed)  # fmt: skip
    return pd.concat([X for X, _ in parts], ignore_index=True), np.concatenate([p for _, p in parts])
