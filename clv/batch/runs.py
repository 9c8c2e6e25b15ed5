"""Scoring runs, kept as models are: `scores/run_<UTC timestamp>/` holds the scores (a Parquet dataset, a file a
part) and `portfolio.json`, and `scores/latest` is switched to the newest with one rename. Two runs of a bank
compare: the value moved by segment, the customers who moved two deciles or more, and the at-risk list's changes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from clv.batch import sinks
from clv.batch.portfolio import PORTFOLIO, Portfolio, portfolio
from clv.common import dates
from clv.common.cluster import Runner
from clv.common.io import atomic_folder, point_link, write_json
from clv.data.contract import DataContractError
from clv.data.layout import Source
from clv.data.location import WarehouseURL
from clv.model.artifacts import LoadedModel

RUN_PREFIX = "run_"
LATEST = "latest"
SCORES = "scores.parquet"
MOVED = 2  # deciles a customer must move to be listed
SHOWN = 20  # customers listed of those who moved


def score_run(
    source: Source,
    runner: Runner,
    loaded: LoadedModel,
    as_of: dt.date | None,
    data_dir: Path,
    scores_dir: Path,
    output: Path | WarehouseURL | None = None,
    curve: Path | None = None,
    portfolio_table: str | None = None,
) -> tuple[Path | WarehouseURL, Portfolio]:
    """Score the bank and compute its portfolio: into a new run under `scores_dir` (switched to latest), or, with
    `output`, into that file or dataset with portfolio.json beside it, or into that database table (and the
    portfolio into `portfolio_table` there). Returns where the scores went."""
    from clv.batch.scoring import write_scores  # the model's libraries: not for reading or comparing runs

    as_of = as_of or dates.from_day(source.last_day)
    horizons = loaded.predictor.horizons

    def summed(scores: Path, name: str) -> Portfolio:
        done = write_scores(source, runner, loaded.predictor, as_of, scores, curve)
        return portfolio(done.summary, loaded.metadata, horizons, name, as_of, str(data_dir), source.fingerprint)

    if isinstance(output, WarehouseURL):
        output = sinks.score_table(output)
        portfolio_to = None if portfolio_table is None else sinks.portfolio_url(output, portfolio_table)
        # the same model, date and data make the same run: scoring twice leaves the same rows
        same = f"{loaded.version}|{as_of}|{source.fingerprint}".encode()
        stamp = sinks.RunStamp(as_of, loaded.version, f"{RUN_PREFIX}{hashlib.sha256(same).hexdigest()[:16]}")
        scores_dir.mkdir(parents=True, exist_ok=True)  # the parts go where every worker can write, as a run's do
        with tempfile.TemporaryDirectory(prefix=".warehouse-", dir=scores_dir) as folder:
            result = summed(Path(folder) / SCORES, stamp.run_id)
            sinks.write_scores_table(output, Path(folder) / SCORES, stamp, result.model_dump(mode="json"), portfolio_to)
        return output, result
    if portfolio_table is not None:
        raise DataContractError("--portfolio-table: goes with --output postgresql://...?table=SCHEMA.NAME")
    if output is not None:
        result = summed(output, output.name)
        write_json(result.model_dump(mode="json"), output.parent / PORTFOLIO)
        return output, result
    final = scores_dir / f"{RUN_PREFIX}{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%fZ')}"
    with atomic_folder(final) as tmp:
        result = summed(tmp / SCORES, final.name)
        write_json(result.model_dump(mode="json"), tmp / PORTFOLIO)
    point_link(scores_dir / LATEST, final.name)
    return final / SCORES, result


def run_folder(scores_dir: Path, run: str | None = None) -> Path:
    """A run's folder by name (run_..., or a path), by default the latest; refused in one line when missing."""
    if run is not None and Path(run).is_dir():
        return Path(run)
    name = run or LATEST
    path = scores_dir / (name if name.startswith(RUN_PREFIX) or name == LATEST else f"{RUN_PREFIX}{name}")
    if not (path / PORTFOLIO).is_file():
        if run is None:
            raise DataContractError(f"{scores_dir}: no scoring run yet; `python model.py score` makes one")
        raise DataContractError(f"{path}: no such scoring run (no {PORTFOLIO}); `ls {scores_dir}` lists them")
    return path


def read_portfolio(folder: Path) -> Portfolio:
    path = folder / PORTFOLIO
    try:
        return Portfolio.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, json.JSONDecodeError) as exc:
        raise DataContractError(f"{path}: not a portfolio this version reads ({exc.__class__.__name__})") from None


def compare(run: Path, against: Path) -> dict:
    """What changed from `against` to `run`: the value by segment, the customers who moved MOVED deciles or more
    (by each run's own decile bounds), and who entered or left the at-risk list."""
    new, old = read_portfolio(run), read_portfolio(against)
    moved = {}
    for kind, rows in new.segments.items():
        before = {row.segment: row.value for row in old.segments.get(kind, [])}
        after = {row.segment: row.value for row in rows}
        moved[kind] = [
            {
                "segment": name,
                "before": before.get(name, 0.0),
                "after": after.get(name, 0.0),
                "change": round(after.get(name, 0.0) - before.get(name, 0.0), 2),
            }
            for name in sorted(before.keys() | after.keys())
        ]
    scores = {}
    for name, folder, result in (("after", run, new), ("before", against, old)):
        frame = pd.read_parquet(folder / SCORES, columns=["customer_id", "predicted_clv"])
        frame["decile"] = decile_of(frame["predicted_clv"].to_numpy(), result)
        scores[name] = frame.set_index("customer_id")
    both = scores["after"].join(scores["before"], lsuffix="_after", rsuffix="_before", how="inner")
    jump = both[(both["decile_after"] - both["decile_before"]).abs() >= MOVED]
    jump = jump.assign(change=jump["predicted_clv_after"] - jump["predicted_clv_before"])
    jump = jump.reindex(jump["change"].abs().sort_values(ascending=False, kind="stable").index)
    risk_new, risk_old = ({r.customer_id for r in p.at_risk} for p in (new, old))
    return {
        "run": new.run,
        "against": old.run,
        "as_of": new.as_of,
        "against_as_of": old.as_of,
        "customers": {"run": new.customers, "against": old.customers, "in_both": len(both)},
        "value": {
            "run": new.horizons[0].total,
            "against": old.horizons[0].total,
            "change": round(new.horizons[0].total - old.horizons[0].total, 2),
        },
        "segments": moved,
        "moved_deciles": {
            "at_least": MOVED,
            "customers": len(jump),
            "largest": [
                {
                    "customer_id": int(i),
                    "decile_before": int(r.decile_before),
                    "decile_after": int(r.decile_after),
                    "clv_before": float(r.predicted_clv_before),
                    "clv_after": float(r.predicted_clv_after),
                }
                for i, r in jump.head(SHOWN).iterrows()
            ],
        },
        "at_risk": {"entered": sorted(risk_new - risk_old), "left": sorted(risk_old - risk_new)},
    }


def decile_of(values: np.ndarray, result: Portfolio) -> np.ndarray:
    """Each value's decile (1 highest) by a run's decile bounds: below a decile's lowest value, the next one."""
    lows = np.array([d.low_clv for d in result.deciles[:-1]])  # deciles 1..9, descending
    return 1 + np.searchsorted(-lows, -values, side="left")


def table(result: dict) -> str:
    """A comparison as text."""
    v = result["value"]
    lines = [
        f"{result['run']} (as of {result['as_of']}) against {result['against']} (as of "
        f"{result['against_as_of']}): {result['customers']['in_both']:,} customers in both",
        f"headline value {v['against']:,.2f} -> {v['run']:,.2f} ({v['change']:+,.2f})",
    ]
    for kind, rows in result["segments"].items():
        lines.append(f"\n{kind:<28} {'before':>14} {'after':>14} {'change':>14}")
        lines += [
            f"  {r['segment']:<26} {r['before']:>14,.2f} {r['after']:>14,.2f} {r['change']:>+14,.2f}" for r in rows
        ]
    m = result["moved_deciles"]
    lines.append(f"\n{m['customers']:,} customers moved {m['at_least']} deciles or more; the largest changes:")
    lines += [
        f"  {r['customer_id']:>10}  decile {r['decile_before']} -> {r['decile_after']}  "
        f"{r['clv_before']:,.2f} -> {r['clv_after']:,.2f}"
        for r in m["largest"]
    ]
    risk = result["at_risk"]
    lines.append(f"\nat-risk list: {len(risk['entered'])} entered, {len(risk['left'])} left")
    for word in ("entered", "left"):
        if risk[word]:
            more = " ..." if len(risk[word]) > SHOWN else ""
            lines.append(f"  {word}: {', '.join(map(str, risk[word][:SHOWN]))}{more}")
    return "\n".join(lines)


def portfolio_table(p: dict) -> str:
    """A run's portfolio as text: the horizons' totals, the value at risk, the deciles and the segments."""
    lines = [f"{p['run']}: {p['customers']:,} customers as of {p['as_of']}, model {p['model_version']}"]
    lines += [
        f"  {h['months']:>3d} months  {h['total']:>16,.2f}  ({h['low']:,.2f} to {h['high']:,.2f})"
        for h in p["horizons"]
    ]
    lines.append(f"value at risk {p['value_at_risk']:,.2f}")
    lines.append("\ndecile  customers            value   share")
    lines += [
        f"{d['decile']:>6d} {d['customers']:>10,d} {d['value']:>16,.2f} {d['share'] or 0:>7.1%}" for d in p["deciles"]
    ]
    for kind, rows in p["segments"].items():
        lines.append(f"\n{kind:<28} {'customers':>10} {'value':>16} {'at risk':>14} {'churn':>7}")
        lines += [
            f"  {r['segment']:<26} {r['customers']:>10,d} {r['value']:>16,.2f} {r['value_at_risk']:>14,.2f} "
            f"{'-' if r['churn_rate'] is None else format(r['churn_rate'], '.1%'):>7}"
            for r in rows
        ]
    return "\n".join(lines)
