"""The honest protocol (docs/protocol.md): features as of cutoffs, labels from the months after, customers
split 80/20 by a hash of their id; fit on the training customers, judge on every held-out one.

Work on the bank goes part by part through a runner (clv.common.cluster, over the parts of clv.data.layout): the rows
to learn from come from the first parts up to the training cap, the fit happens here, and each part then
scores its own held-out customers and sends back only the few columns the metrics need.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance

from clv.common import dates
from clv.common.cluster import LocalRunner, Runner
from clv.data.bank import Bank
from clv.data.contract import DataContractError
from clv.data.layout import Source, open_bank
from clv.data.schema import CHURN_MONTHS, DISCOUNT_RATE, HORIZON_MONTHS, HORIZONS, JUDGED_HORIZON
from clv.model import artifacts, conformal, metrics
from clv.model.card import Evaluation, ModelMetadata
from clv.model.estimator import BankingCLVModel
from clv.model.features import LEDGER_FEATURES, build_features
from clv.model.labels import churned, eligible, future_value
from clv.model.lifetime import Lifetime
from clv.model.monitoring import reference_profile

logger = logging.getLogger(__name__)

MAX_TRAIN_CUSTOMERS = 15_000  # past this the held-out metrics stop improving; the fit time does not
IMPORTANCE_ROWS = 2_000  # held-out rows permutation importance shuffles
HELD_OUT_SHARE = 0.2
HISTORY_MONTHS = 12  # a cutoff a horizon is judged at needs a year of features before it
HORIZON_CUSTOMERS = 50_000  # held-out customers a longer horizon is judged on at most (parts are random samples)


@dataclass
class Rows:
    """Feature rows with their labels (value and churn), customers and as-of days."""

    X: pd.DataFrame
    y: np.ndarray
    churned: np.ndarray  # 1 left, 0 stayed, NaN cannot leave (clv.model.labels.churned)
    customer_id: np.ndarray
    cutoff: np.ndarray  # day of each row's as-of date

    def take(self, keep: np.ndarray) -> Rows:
        return Rows(
            self.X.iloc[keep].reset_index(drop=True),
            self.y[keep],
            self.churned[keep],
            self.customer_id[keep],
            self.cutoff[keep],
        )

    @classmethod
    def concat(cls, parts: list[Rows]) -> Rows:
        columns = ("y", "churned", "customer_id", "cutoff")
        return cls(
            pd.concat([p.X for p in parts], ignore_index=True),
            *(np.concatenate([getattr(p, name) for p in parts]) for name in columns),
        )


@dataclass
class TrainResult:
    model: BankingCLVModel
    cutoff: dt.date
    data_last_date: dt.date
    report: dict


def default_cutoff(last_day: int, horizon_months: int) -> dt.date:
    """The data's last month end minus the horizon: the latest cutoff whose label is complete."""
    return dates.add_months(dates.last_month_end(dates.from_day(last_day)), -horizon_months)


def rows_at(
    bank: Bank, cutoffs: list[dt.date], horizon_months: int, discount_rate: float, churn_months: int = CHURN_MONTHS
) -> Rows:
    """Every eligible customer's feature row and labels at each cutoff."""
    parts = []
    for cutoff in cutoffs:
        day = dates.to_day(cutoff)
        keep = eligible(bank, day)
        X = build_features(bank, day).iloc[keep].reset_index(drop=True)
        y = future_value(bank, day, horizon_months, discount_rate)[keep]
        left = churned(bank, day, churn_months)[keep]
        parts.append(Rows(X, y, left, bank.customer_id[keep], np.full(int(keep.sum()), day)))
    return Rows.concat(parts)


def _fraction(customer_id: np.ndarray, seed: int) -> np.ndarray:
    """A customer's place in [0, 1), from its id and the seed alone (a multiplicative hash)."""
    offset = np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
    mixed = (np.asarray(customer_id, np.uint64) + offset) * np.uint64(0xBF58476D1CE4E5B9)  # wraps mod 2**64
    return (mixed >> np.uint64(40)).astype(np.float64) / 2**24


def held_out(customer_id: np.ndarray, seed: int, share: float = HELD_OUT_SHARE) -> np.ndarray:
    """Rows of the customers held out for evaluation. A customer's fate depends only on its id and the
    seed, so any subset of rows, at any cutoff, in any part, agrees with training's."""
    return _fraction(customer_id, seed) < share


def calibrating(customer_id: np.ndarray, seed: int) -> np.ndarray:
    """Of the held-out customers, the half that measures the longer horizons' margins; the other half judges them."""
    return _fraction(customer_id, seed) < HELD_OUT_SHARE / 2


def last12_baseline(X: pd.DataFrame, horizon_months: int, discount_rate: float) -> np.ndarray:
    """The last 12 months' value repeated (ledger margin, or positive inflows without a ledger), discounted."""
    monthly = X["margin_12m"].fillna(X["inflow_365d"]).to_numpy() / 12
    return np.nan_to_num(monthly) * dates.discount_factors(horizon_months, discount_rate).sum()


def learning_rows(
    source: Source,
    part: str,
    cutoffs: list[dt.date],
    horizon_months: int,
    discount_rate: float,
    seed: int,
    churn_months: int = CHURN_MONTHS,
):
    """A part's rows of the customers training learns from (those not held out), at every cutoff."""
    rows = rows_at(source.load(part)[0], cutoffs, horizon_months, discount_rate, churn_months)
    return rows.take(~held_out(rows.customer_id, seed))


def held_out_scores(
    source: Source,
    part: str,
    model: BankingCLVModel,
    cutoff: dt.date,
    horizon_months: int,
    discount_rate: float,
    seed: int | None,
    sample: int = IMPORTANCE_ROWS,
    churn_months: int = CHURN_MONTHS,
) -> tuple[pd.DataFrame, Rows]:
    """A part's held-out customers at the cutoff (every customer when `seed` is None): the labels, the
    model's answer with and without the ledger, the last-12 baseline and the oracle, as columns; and a
    seeded sample of their rows, for permutation importance."""
    bank, oracle = source.load(part)
    rows = rows_at(bank, [cutoff], horizon_months, discount_rate, churn_months)
    if seed is not None:
        rows = rows.take(held_out(rows.customer_id, seed))
    out = model.predict_all(rows.X, contributions=False)
    blind = model.predict_all(model.without_ledger(rows.X), contributions=False)
    expected, oracle_churn = np.full(rows.y.size, np.nan), np.full(rows.y.size, np.nan)
    longer = {}  # the oracle's expected value of other horizons, as oracle_36m, ...
    if oracle is not None and oracle.as_of == cutoff:
        expected = oracle.expected_clv.reindex(rows.customer_id).to_numpy(np.float64)
        longer = {
            f"oracle_{months}m": values.reindex(rows.customer_id).to_numpy(np.float64)
            for months, values in oracle.horizons.items()
        }
        # the generator's oracle gives the probability of leaving within the default CHURN_MONTHS only
        if oracle.churn_probability is not None and churn_months == CHURN_MONTHS:
            oracle_churn = oracle.churn_probability.reindex(rows.customer_id).to_numpy(np.float64)
    scores = pd.DataFrame(
        {
            "customer_id": rows.customer_id,
            "actual": rows.y,
            "predicted": out["point"],
            "low": out["low"],
            "high": out["high"],
            "blind_predicted": blind["point"],
            "blind_low": blind["low"],
            "blind_high": blind["high"],
            "last12": last12_baseline(rows.X, horizon_months, discount_rate),
            "oracle": expected,
            "churned": rows.churned,
            "churn_probability": out["churn"],
            "blind_churn_probability": blind["churn"],
            "oracle_churn_probability": oracle_churn,
            **longer,
        }
    )
    pick = np.random.default_rng(seed).permutation(rows.y.size)[:sample]
    return scores, rows.take(np.sort(pick))


def evaluation(scores: pd.DataFrame, train_mean: float) -> dict:
    """Held-out metrics of the model, the baselines and (when known) the oracle, under one stable shape."""
    y = scores["actual"].to_numpy()
    model = metrics.report(y, scores["predicted"], scores["low"], scores["high"])
    result = {
        "model": model,
        "model_without_ledger": metrics.report(y, scores["blind_predicted"], scores["blind_low"], scores["blind_high"]),
        "baseline_last12": metrics.report(y, scores["last12"]),
        "baseline_mean": metrics.report(y, np.full(y.size, train_mean)),
        "oracle": None,
    }
    known = scores["oracle"].notna().to_numpy()
    if known.any():
        result["oracle"] = metrics.report(y[known], scores["oracle"].to_numpy()[known])
        model["oracle_ratio"] = model["normalized_gini"] / result["oracle"]["normalized_gini"]
    deciles = metrics.decile_table(y, scores["predicted"].to_numpy())
    report = {
        "metrics": result,
        "deciles": deciles,
        "test_customers": int(y.size),
        "train_mean": train_mean,
        "churn": churn_evaluation(scores),
    }
    return Evaluation.model_validate(report).model_dump(mode="json")  # NaN becomes None: valid JSON


def churn_evaluation(scores: pd.DataFrame) -> dict | None:
    """The churn probability judged on the held-out customers who could leave, with and without the ledger;
    None for a model without one."""
    known = scores["churned"].notna() & scores["churn_probability"].notna()
    if not known.any():
        return None
    churned = scores["churned"][known].to_numpy()
    result = {
        "model": metrics.churn_report(churned, scores["churn_probability"][known].to_numpy()),
        "model_without_ledger": metrics.churn_report(churned, scores["blind_churn_probability"][known].to_numpy()),
        "oracle": None,
    }
    oracle = scores["oracle_churn_probability"][known]
    if oracle.notna().all():  # the oracle of every customer who could leave (an older bank's oracle has none)
        result["oracle"] = metrics.churn_report(churned, oracle.to_numpy())
    return result


def horizon_scores(
    source: Source,
    part: str,
    model: BankingCLVModel,
    cutoff: dt.date,
    months: int,
    discount_rate: float,
    seed: int,
    churn_months: int = CHURN_MONTHS,
) -> pd.DataFrame:
    """A part's held-out customers at `cutoff`, over `months`: the realized value; the model's headline value, band
    and churn probability, with and without the ledger; the naive annuity; and whether the customer calibrates the
    horizon or judges it."""
    rows = rows_at(source.load(part)[0], [cutoff], months, discount_rate, churn_months)
    rows = rows.take(held_out(rows.customer_id, seed))
    frame = {
        "customer_id": rows.customer_id,
        "actual": rows.y,
        "calibrates": calibrating(rows.customer_id, seed),
        "annuity": last12_baseline(rows.X, months, discount_rate),
    }
    for prefix, X in (("", rows.X), ("blind_", model.without_ledger(rows.X))):
        out = model.predict_all(X, contributions=False)
        frame |= {f"{prefix}{key}": out[key] for key in ("point", "low", "high", "churn")}
    return pd.DataFrame(frame)


def judge_lifetime(
    source: Source, runner: Runner, model: BankingCLVModel, cutoff: dt.date, seed: int, headline: dict
) -> list[dict]:
    """Fit and judge the longer horizons on what happened after a cutoff the data reaches that far (the training
    cutoff, or an earlier one), half the held-out customers fitting, the other half judging against the naive
    annuity. The stayer's margin reversion is fitted at the longest such horizon; each horizon's interval margin
    at its own. A horizon past the data is extrapolated: its margin is the longest measured one's, scaled by
    their bands' spread. Sets the model's `lifetime_`; returns one entry a horizon, the headline's first."""
    lifetime = model.lifetime_
    earliest = dates.add_months(data_start(source), HISTORY_MONTHS)
    asked = {*lifetime.horizons[1:]}
    if lifetime.headline < JUDGED_HORIZON <= lifetime.longest:
        asked.add(JUDGED_HORIZON)
    scores, at = {}, {}
    parts = first_parts(source, HORIZON_CUSTOMERS / HELD_OUT_SHARE)
    for months in sorted(asked):
        at[months] = min(cutoff, default_cutoff(source.last_day, months))
        if at[months] < earliest:
            continue
        frames = runner.map(
            horizon_scores,
            source,
            parts,
            label=f"{months}-month value",
            model=runner.share(model),
            cutoff=at[months],
            months=months,
            discount_rate=lifetime.discount_rate,
            seed=seed,
            churn_months=lifetime.churn_months,
        )
        scores[months] = pd.concat(frames, ignore_index=True).sort_values(
            "customer_id", kind="stable", ignore_index=True
        )
    longest = max((m for m in scores if m > lifetime.headline), default=None)
    if longest is not None:
        fit = scores[longest][scores[longest]["calibrates"]]
        lifetime = lifetime.fit_reversion(
            fit["point"].to_numpy(), fit["churn"].to_numpy(), fit["actual"].to_numpy(), longest
        )
    entries = {
        lifetime.headline: {"months": lifetime.headline, "served": True, "judged": True, "cutoff": cutoff, **headline}
    }
    margins = {}
    for months, frame in scores.items():
        fit = frame[frame["calibrates"]]
        margins[months] = {
            group: conformal.margin(
                fit["actual"].to_numpy(), *_band(lifetime, fit, prefix, months)[1:], model.interval_level
            )
            for group, prefix in (("ledger", ""), ("no_ledger", "blind_"))
        }
        judging = frame[~frame["calibrates"]]
        entries[months] = {
            "months": months,
            "served": months in lifetime.horizons,
            "judged": True,
            "cutoff": at[months],
            **_judged(lifetime, judging, margins[months], months),
        }
    for months in lifetime.horizons[1:]:
        if months in margins:
            continue
        if longest is None:  # nothing measured: the headline's band, scaled
            margins[months] = {"ledger": 0.0, "no_ledger": 0.0}
        else:
            churn = scores[longest]["churn"][scores[longest]["calibrates"]].to_numpy()
            scale = float(np.mean(lifetime.spread(churn, months) / lifetime.spread(churn, longest)))
            margins[months] = {group: value * scale for group, value in margins[longest].items()}
        entries[months] = {
            "months": months,
            "served": True,
            "judged": False,
            "cutoff": None,
            "extrapolated_from": longest,
        }
    served = {months: margins[months] for months in lifetime.horizons[1:]}
    model.set_params(lifetime=replace(lifetime, margins=served, judged=tuple(m for m in sorted(scores) if m in served)))
    return [entries[months] for months in sorted(entries)]


def against_oracle(entries: list[dict], lifetime: Lifetime, scores: pd.DataFrame) -> None:
    """Each horizon's value at the training cutoff judged against the generator's oracle, the expected value of each
    held-out customer's hidden state (docs/metrics.md#horizons): added to the horizon's entry when the data has it."""
    for entry in entries:
        months = entry["months"]
        column = "oracle" if months == lifetime.headline else f"oracle_{months}m"
        if column not in scores or scores[column].isna().all():
            continue
        point, churn = scores["predicted"].to_numpy(), scores["churn_probability"].to_numpy()
        value = point if months == lifetime.headline else lifetime.value(point, churn, months)
        entry["against_oracle"] = metrics.report(scores[column].to_numpy(), value)


def _band(lifetime: Lifetime, frame: pd.DataFrame, prefix: str, months: int) -> tuple[np.ndarray, ...]:
    """A horizon's value and its band before the horizon's own margin, for the rows with (`prefix` "") or without
    ("blind_") the ledger."""
    columns = (frame[f"{prefix}{key}"].to_numpy() for key in ("point", "low", "high", "churn"))
    return lifetime.only(months).values(*columns, None)[months]


def _judged(lifetime: Lifetime, scores: pd.DataFrame, margin: dict[str, float], months: int) -> dict:
    """A horizon's metrics on the customers who judge it: the model (its band widened by the measured margin), the
    model without the ledger, and the naive annuity."""
    y = scores["actual"].to_numpy()
    result = {"customers": int(y.size)}
    for name, prefix, group in (("model", "", "ledger"), ("model_without_ledger", "blind_", "no_ledger")):
        point, low, high = _band(lifetime, scores, prefix, months)
        low, high = conformal.widen(point, low, high, margin[group])
        result[name] = metrics.report(y, point, low, high)
    result["baseline_annuity"] = metrics.report(y, scores["annuity"].to_numpy())
    return result


def data_start(source: Source) -> dt.date:
    """The data's first month end: where its first transaction falls (customers may have joined long before), from
    the first part with transactions, a sample of the customers as parts are."""
    days = next((days for part in source.parts if (days := source.load(part)[0].transactions["day"]).size), None)
    if days is None:
        return dates.last_month_end(dates.from_day(source.last_day))
    return dates.last_month_end(dates.from_day(int(days.min())))


def global_importance(model: BankingCLVModel, rows: Rows, seed: int) -> list[dict]:
    """Permutation importance on held-out customers: the drop in R² when a feature is shuffled."""
    if rows.y.size > IMPORTANCE_ROWS:
        rows = rows.take(np.sort(np.random.default_rng(seed).choice(rows.y.size, IMPORTANCE_ROWS, replace=False)))
    result = permutation_importance(model, rows.X, rows.y, n_repeats=3, random_state=seed, n_jobs=1)
    order = np.argsort(-result.importances_mean)
    names = model.feature_names_in_
    return [
        {
            "feature": str(names[j]),
            "importance": float(result.importances_mean[j]),
            "std": float(result.importances_std[j]),
        }
        for j in order
    ]


def check_cutoff(source: Source, cutoff: dt.date | None, horizon_months: int, option: str = "--cutoff") -> dt.date:
    """The cutoff, by default the latest whose labels are complete; one whose labels run past the data is refused.
    `horizon_months` is the longer of the value's and the churn label's."""
    latest = default_cutoff(source.last_day, horizon_months)
    cutoff = cutoff or latest
    if dates.to_day(dates.shift_months(cutoff, horizon_months)) > source.last_day:
        raise DataContractError(
            f"{option} {cutoff}: the {horizon_months} months after it run past the data's last date "
            f"{dates.from_day(source.last_day)}; use {latest} or earlier"
        )
    return cutoff


def first_parts(source: Source, customers: float) -> list[str]:
    """The first parts that hold `customers` between them (all of them in a smaller bank)."""
    parts, held = [], 0
    for part in source.parts:
        parts.append(part)
        held += source.customers_in([part])
        if held >= customers:
            break
    return parts


def gather_learning_rows(
    source: Source,
    runner: Runner,
    cutoffs: list[dt.date],
    horizon: int,
    rate: float,
    seed: int,
    cap: int,
    churn_months: int = CHURN_MONTHS,
) -> Rows:
    """Training rows from whole parts, in order, up to `cap` customers (a random sample: parts are), then a
    seeded sample of `cap` customers when the parts hold more."""
    parts = first_parts(source, cap * 1.05 / (1 - HELD_OUT_SHARE))  # a part trains on (1 - HELD_OUT_SHARE) of its own
    rows = Rows.concat(
        runner.map(
            learning_rows,
            source,
            parts,
            label="learning rows",
            cutoffs=cutoffs,
            horizon_months=horizon,
            discount_rate=rate,
            seed=seed,
            churn_months=churn_months,
        )
    )
    learners = np.unique(rows.customer_id)
    if learners.size > cap:
        keep = np.random.default_rng(seed).choice(learners, cap, replace=False)
        rows = rows.take(np.isin(rows.customer_id, keep))
        logger.info("learning from %d of %d training customers", cap, learners.size)
    return rows


def train(
    data_dir: Path,
    cutoff: dt.date | None = None,
    horizon_months: int = HORIZON_MONTHS,
    discount_rate: float = DISCOUNT_RATE,
    seed: int = 42,
    extra_cutoffs: int = 1,
    max_train_customers: int = MAX_TRAIN_CUSTOMERS,
    runner: Runner | None = None,
    churn_months: int | None = None,
    horizons: tuple[int, ...] = HORIZONS,
    **params: object,
) -> TrainResult:
    """Train on 80% of customers at the cutoff (and `extra_cutoffs` earlier quarters), judge on the rest. The churn
    probability is of leaving within `churn_months`, by default the value's horizon; the value extends to `horizons`
    (clv.model.lifetime), each judged where the data reaches."""
    started = time.perf_counter()
    churn_months = churn_months or horizon_months
    source, runner = open_bank(data_dir), runner or LocalRunner()
    cutoff = check_cutoff(source, cutoff, max(horizon_months, churn_months))
    cutoffs = [cutoff, *(dates.add_months(cutoff, -3 * k) for k in range(1, extra_cutoffs + 1))]
    rows = gather_learning_rows(
        source, runner, cutoffs, horizon_months, discount_rate, seed, max_train_customers, churn_months
    )
    learners = np.unique(rows.customer_id).size
    if learners < 40:
        raise DataContractError(
            f"{data_dir}: only {learners} customers to learn from at {cutoff} (80% of those who had joined and "
            "not left); need 40 or more"
        )
    logger.info("rows of %d customers at %d cutoffs in %.1f s", learners, len(cutoffs), time.perf_counter() - started)
    model = BankingCLVModel(random_state=seed, ledger_features=LEDGER_FEATURES, **params)
    model.fit(rows.X, rows.y, groups=rows.customer_id, churned=churn_labels(rows.churned))
    logger.info("fitted in %.1f s", time.perf_counter() - started)
    train_mean = float(rows.y[rows.cutoff == dates.to_day(cutoff)].mean())
    scores, sample = judge(
        source, runner, model, cutoff, horizon_months, discount_rate, seed, churn_months=churn_months
    )
    report = evaluation(scores, train_mean)
    model.set_params(
        lifetime=Lifetime((horizon_months, *sorted(set(horizons) - {horizon_months})), churn_months, discount_rate)
    )
    headline = {
        "customers": report["test_customers"],
        "model": report["metrics"]["model"],
        "model_without_ledger": report["metrics"]["model_without_ledger"],
        "baseline_annuity": report["metrics"]["baseline_last12"],
    }
    report["horizons"] = judge_lifetime(source, runner, model, cutoff, seed, headline)
    against_oracle(report["horizons"], model.lifetime_, scores)
    report["importance"] = global_importance(model, sample, seed)
    report["rows"] = {"train": int(rows.y.size), "test": report["test_customers"], "cutoffs": cutoffs}
    report["data_fingerprint"] = source.fingerprint
    report["synthetic_data"] = source.synthetic
    # the drift reference compares like with like: the rows as of the model's cutoff alone, not mixed with the
    # earlier quarter's (a same population monitored at the cutoff would otherwise drift on its history_days)
    latest = rows.take(rows.cutoff == dates.to_day(cutoff))
    report["profile"] = reference_profile(latest.X, model.predict(latest.X), outputs=churn_output(model, latest.X))
    report["seconds"] = round(time.perf_counter() - started, 1)
    logger.info("judged %d held-out customers in %.1f s", report["test_customers"], report["seconds"])
    return TrainResult(model, cutoff, dates.from_day(source.last_day), report)


def churn_output(model: BankingCLVModel, X: pd.DataFrame) -> dict[str, np.ndarray]:
    """The model's other output the drift profile covers: its churn probability, when it has one."""
    return {} if model.churn_ is None else {"churn_probability": model.predict_churn(X)}


def churn_labels(churned: np.ndarray) -> np.ndarray | None:
    """The churn labels to learn from, or None (no churn probability, and a warning) when nobody left or nobody
    stayed: a bank whose customers all kept a product has nothing to learn a probability of leaving from."""
    known = churned[~np.isnan(churned)]
    if np.unique(known).size == 2:
        return churned
    logger.warning(
        "no churn probability: all %d churn labels are alike (%s)",
        known.size,
        "nobody left" if not known.size or known[0] == 0 else "everybody left",
    )
    return None


def judge(
    source: Source,
    runner: Runner,
    model: BankingCLVModel,
    cutoff: dt.date,
    horizon: int,
    rate: float,
    seed: int | None,
    importance: bool = True,
    churn_months: int = CHURN_MONTHS,
) -> tuple[pd.DataFrame, Rows]:
    """Every part's held-out customers scored where the part lives; only their columns come back, and, for the
    `importance`, a sample of their rows."""
    # each part sends its share of the importance rows (twice it, for parts with fewer held-out customers than
    # their share), so that the client's memory stays the same whatever the number of parts
    sample = min(IMPORTANCE_ROWS, math.ceil(2 * IMPORTANCE_ROWS / len(source.parts))) if importance else 0
    results = runner.map(
        held_out_scores,
        source,
        label="held-out customers",
        model=runner.share(model),
        cutoff=cutoff,
        horizon_months=horizon,
        discount_rate=rate,
        seed=seed,
        sample=sample,
        churn_months=churn_months,
    )
    scores = pd.concat([scores for scores, _ in results], ignore_index=True)
    # one order whatever the layout: metrics that break ties by order (a constant baseline) give one answer
    scores = scores.sort_values("customer_id", kind="stable", ignore_index=True)
    return scores, Rows.concat([sample for _, sample in results])


def evaluate_saved(
    model: BankingCLVModel,
    metadata: ModelMetadata,
    data_dir: Path,
    cutoff: dt.date | None = None,
    runner: Runner | None = None,
) -> dict:
    """Metrics of a saved model on a folder: on its held-out customers when it is the training data,
    else on every customer eligible at the cutoff."""
    source, runner = open_bank(data_dir), runner or LocalRunner()
    cutoff = cutoff or metadata.cutoff
    same = source.fingerprint == metadata.data_fingerprint
    scores, _ = judge(
        source,
        runner,
        model,
        cutoff,
        metadata.horizon_months,
        metadata.discount_rate,
        metadata.seed if same else None,
        importance=False,
        churn_months=metadata.churn_months,
    )
    result = evaluation(scores, metadata.train_mean)
    result["evaluated_on"] = "held-out customers of the training data" if same else "every eligible customer"
    result["cutoff"] = cutoff.isoformat()
    return result


def train_and_save(
    data_dir: Path,
    model_dir: Path,
    cutoff: dt.date | None = None,
    horizon_months: int = HORIZON_MONTHS,
    discount_rate: float = DISCOUNT_RATE,
    seed: int = 42,
    runner: Runner | None = None,
    churn_months: int | None = None,
    horizons: tuple[int, ...] = HORIZONS,
) -> tuple[Path, ModelMetadata]:
    """Train on a folder, save a new version and make it latest; return its folder and metadata."""
    churn_months = churn_months or horizon_months
    result = train(
        data_dir,
        cutoff,
        horizon_months,
        discount_rate,
        seed,
        runner=runner,
        churn_months=churn_months,
        horizons=horizons,
    )
    report = result.report
    metadata = {
        "data_dir": str(data_dir),
        "data_last_date": result.data_last_date,
        "cutoff": result.cutoff,
        "horizon_months": horizon_months,
        "churn_months": churn_months,
        "discount_rate": discount_rate,
        "seed": seed,
        "interval_level": result.model.interval_level,
        "params": {
            k: v for k, v in result.model.get_params().items() if k != "lifetime"
        },  # the horizons have their own entry
        **report,
    }
    profile = metadata.pop("profile")
    path = artifacts.save(result.model, metadata, report["importance"], profile, model_dir)
    return path, artifacts.read_metadata(path)
