"""The longer horizons (docs/protocol.md#horizons): the stayer's margin reversion and each horizon's interval margin
fitted on what happened after a cutoff the data reaches that far, on half the held-out customers, and each horizon
judged on the other half against the naive annuity; a horizon past the data is extrapolated, and its card entry
says so. The fitted model is only read: the caller gets the fitted `Lifetime` and the card's entries."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from clv.common import dates
from clv.data.defaults import JUDGED_HORIZON
from clv.data.layout import Source
from clv.model import conformal, metrics
from clv.model.card import Evaluation, HorizonMetrics, MetricSet
from clv.model.estimator import BankingCLVModel
from clv.model.evaluation import last12_baseline
from clv.model.lifetime import Lifetime
from clv.model.protocol import Rows, data_start, default_cutoff

HISTORY_MONTHS = 12  # a cutoff a horizon is judged at needs a year of features before it
HORIZON_CUSTOMERS = 50_000  # held-out customers a longer horizon is fitted and judged on at most, from every part


@dataclass(frozen=True)
class FittedHorizons:
    """The lifetime fitted to the model's answers, and one card entry a horizon, the headline's first."""

    lifetime: Lifetime
    entries: list[HorizonMetrics]


def judged_at(source: Source, lifetime: Lifetime, cutoff: dt.date) -> dict[int, dt.date]:
    """The longer horizons judged, each with the cutoff it is judged at: the training cutoff when the data runs that
    many months past it, else the latest cutoff the data allows if it leaves a year of history before it (a horizon
    past that is extrapolated). JUDGED_HORIZON is judged too when it lies between the headline and the longest."""
    earliest = dates.add_months(data_start(source), HISTORY_MONTHS)
    asked = {*lifetime.horizons[1:]}
    if lifetime.headline < JUDGED_HORIZON <= lifetime.longest:
        asked.add(JUDGED_HORIZON)
    at = {months: min(cutoff, default_cutoff(source.last_day, months)) for months in sorted(asked)}
    return {months: day for months, day in at.items() if day >= earliest}


def horizon_frame(
    model: BankingCLVModel, rows: Rows, months: int, discount_rate: float, calibrates: np.ndarray
) -> pd.DataFrame:
    """Held-out rows at a horizon's cutoff, over `months`: the realized value; the model's headline value, band and
    churn probability, with and without the ledger; the naive annuity; and whether the customer calibrates the
    horizon (`calibrates`) or judges it."""
    frame = {
        "customer_id": rows.customer_id,
        "actual": rows.y,
        "calibrates": calibrates,
        "annuity": last12_baseline(rows.X, months, discount_rate),
    }
    for prefix, X in (("", rows.X), ("blind_", model.without_ledger(rows.X))):
        out = model.predict_all(X, contributions=False)
        frame |= {f"{prefix}{key}": out[key] for key in ("point", "low", "high", "churn")}
    return pd.DataFrame(frame)


def fit_horizons(
    model: BankingCLVModel,
    lifetime: Lifetime,
    cutoff: dt.date,
    at: dict[int, dt.date],
    scores: dict[int, pd.DataFrame],
    headline: Evaluation,
) -> FittedHorizons:
    """Fit `lifetime` (its horizons, unmeasured) to the fitted `model`'s answers, and judge each horizon, on what
    happened after a cutoff the data reaches that far (`at`, from `judged_at`; `scores`, the held-out customers'
    `horizon_frame` there): half the held-out customers fitting, the other half judging against the naive annuity.
    The stayer's margin reversion is fitted at the longest such horizon; each horizon's interval margin at its own. A
    horizon past the data is extrapolated: its margin is the longest measured one's, scaled by their bands' spread.
    `headline` is the held-out evaluation at the training cutoff: the headline horizon's entry."""
    longest = max((m for m in scores if m > lifetime.headline), default=None)
    if longest is not None:
        fit = scores[longest][scores[longest]["calibrates"]]
        lifetime = lifetime.fit_reversion(
            fit["point"].to_numpy(), fit["churn"].to_numpy(), fit["actual"].to_numpy(), longest
        )
    entries = {
        lifetime.headline: HorizonMetrics(
            months=lifetime.headline,
            served=True,
            judged=True,
            cutoff=cutoff,
            customers=headline.test_customers,
            model=headline.metrics.model,
            model_without_ledger=headline.metrics.model_without_ledger,
            baseline_annuity=headline.metrics.baseline_last12,
        )
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
        entries[months] = HorizonMetrics(
            months=months,
            served=months in lifetime.horizons,
            judged=True,
            cutoff=at[months],
            **_judged(lifetime, judging, margins[months], months),
        )
    for months in lifetime.horizons[1:]:
        if months in margins:
            continue
        if longest is None:  # nothing measured: the headline's band, scaled
            margins[months] = {"ledger": 0.0, "no_ledger": 0.0}
        else:
            churn = scores[longest]["churn"][scores[longest]["calibrates"]].to_numpy()
            scale = float(np.mean(lifetime.spread(churn, months) / lifetime.spread(churn, longest)))
            margins[months] = {group: value * scale for group, value in margins[longest].items()}
        entries[months] = HorizonMetrics(
            months=months, served=True, judged=False, cutoff=None, extrapolated_from=longest
        )
    served = {months: margins[months] for months in lifetime.horizons[1:]}
    lifetime = replace(lifetime, margins=served, judged=tuple(m for m in sorted(scores) if m in served))
    return FittedHorizons(lifetime, [entries[months] for months in sorted(entries)])


def against_oracle(entries: list[HorizonMetrics], lifetime: Lifetime, scores: pd.DataFrame) -> list[HorizonMetrics]:
    """Each horizon's value at the training cutoff judged against the generator's oracle, the expected value of each
    held-out customer's hidden state (docs/metrics.md#horizons): the entries, each with it when the data has it.
    `scores` are the held-out customers' at the training cutoff (clv.model.evaluation.judge)."""
    judged = []
    for entry in entries:
        months = entry.months
        column = "oracle" if months == lifetime.headline else f"oracle_{months}m"
        if column not in scores or scores[column].isna().all():
            judged.append(entry)
            continue
        point, churn = scores["predicted"].to_numpy(), scores["churn_probability"].to_numpy()
        value = point if months == lifetime.headline else lifetime.value(point, churn, months)
        oracle = MetricSet.model_validate(metrics.report(scores[column].to_numpy(), value))
        judged.append(entry.model_copy(update={"against_oracle": oracle}))
    return judged


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
