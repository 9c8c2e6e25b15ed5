"""The honest protocol's split (docs/protocol.md): cutoffs whose labels are complete, features as of a cutoff with
labels from the months after, and customers split 80/20 by a hash of their id, whatever part holds them.

Work on the bank goes part by part through a runner (clv.common.cluster, over the parts of clv.data.layout): every part
gives the rows of its share of the customers to learn from, drawn by the same hash, as many as the bank's size calls
for (`TrainingConfig.learners`).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clv.common import dates
from clv.common.cluster import Runner
from clv.data.bank import Bank
from clv.data.contract import DataContractError
from clv.data.defaults import CHURN_MONTHS
from clv.data.layout import Source
from clv.model.config import TrainingConfig
from clv.model.features import build_features
from clv.model.labels import churned, eligible, future_value

logger = logging.getLogger(__name__)

HELD_OUT_SHARE = 0.2
# customers drawn per learner wanted: not every training customer is eligible at the cutoff (joined by then and not
# gone: about 0.7 of them on the generated bank), and the draw is trimmed to the number wanted on the client
DRAW_MARGIN = 1.6
# held-out customers judged at most, drawn from every part by the hash: beyond this many the metrics are as precise as
# they need to be, and their rows would crowd the client
JUDGED_CUSTOMERS = 250_000


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


def default_cutoff(last_day: int, horizon_months: int) -> dt.date:
    """The data's last month end minus the horizon: the latest cutoff whose label is complete."""
    return dates.add_months(dates.last_month_end(dates.from_day(last_day)), -horizon_months)


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


def data_start(source: Source) -> dt.date:
    """The data's first month end: where its first transaction falls (customers may have joined long before), from
    the first part with transactions, a sample of the customers as parts are."""
    days = next((days for part in source.parts if (days := source.load(part)[0].transactions["day"]).size), None)
    if days is None:
        return dates.last_month_end(dates.from_day(source.last_day))
    return dates.last_month_end(dates.from_day(int(days.min())))


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
    """A customer's place in [0, 1), from its id and the seed alone (a multiplicative hash), worked in place on a
    copy of the ids: a part's transactions are millions of them."""
    mixed = np.array(customer_id, np.uint64)  # a copy: the ids are the caller's
    mixed += np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
    mixed *= np.uint64(0xBF58476D1CE4E5B9)  # wraps mod 2**64
    mixed >>= np.uint64(40)
    place = mixed.astype(np.float64)
    place *= 2.0**-24  # exact, a power of two
    return place


def held_out(customer_id: np.ndarray, seed: int, share: float = HELD_OUT_SHARE) -> np.ndarray:
    """Rows of the customers held out for evaluation. A customer's fate depends only on its id and the
    seed, so any subset of rows, at any cutoff, in any part, agrees with training's."""
    return _fraction(customer_id, seed) < share


def judged_share(customers: int, at_most: int = JUDGED_CUSTOMERS) -> float:
    """The share of a bank's held-out customers judged so that about `at_most` are: all of them in a smaller bank."""
    return min(1.0, at_most / (HELD_OUT_SHARE * max(customers, 1)))


def judged(customer_id: np.ndarray, seed: int, share: float = 1.0) -> np.ndarray:
    """Rows of the held-out customers judged: `share` of them, by the same hash, in any part."""
    return _judged_at(_fraction(customer_id, seed), share)


def _judged_at(place: np.ndarray, share: float) -> np.ndarray:
    return place < HELD_OUT_SHARE * share


def calibrating(customer_id: np.ndarray, seed: int, share: float = 1.0) -> np.ndarray:
    """Of the held-out customers judged (`share` of them), the half that measures the longer horizons' margins; the
    other half judges them."""
    return _fraction(customer_id, seed) < HELD_OUT_SHARE / 2 * share


def learning_share(customers: int, learners: int) -> float:
    """The share of a bank's training customers drawn from each part to give `learners` customers to learn from:
    all of them in a bank whose training customers are not many more than that."""
    return min(1.0, DRAW_MARGIN * learners / ((1 - HELD_OUT_SHARE) * max(customers, 1)))


def drawn(customer_id: np.ndarray, seed: int, share: float) -> np.ndarray:
    """The training customers (those not held out) drawn to learn from: `share` of them, by the hash that splits
    them from the held-out ones, so a customer's fate depends only on its id, the seed and the share, in any part."""
    return _drawn_at(_fraction(customer_id, seed), share)


def _drawn_at(place: np.ndarray, share: float) -> np.ndarray:
    return (place >= HELD_OUT_SHARE) & (place < HELD_OUT_SHARE + (1 - HELD_OUT_SHARE) * share)


def drawn_or_judged(customer_id: np.ndarray, seed: int, learning: float, judging: float) -> np.ndarray:
    """Rows of the customers `drawn` to learn from (`learning` of the training customers) or `judged` (`judging` of
    the held-out ones): a part's rows for training, by one pass of the hash."""
    place = _fraction(customer_id, seed)
    return _drawn_at(place, learning) | _judged_at(place, judging)


def learning_rows(
    source: Source,
    part: str,
    cutoffs: list[dt.date],
    horizon_months: int,
    discount_rate: float,
    seed: int,
    churn_months: int = CHURN_MONTHS,
    share: float = 1.0,
) -> Rows:
    """A part's rows of the customers training draws to learn from (`share` of those not held out), at every
    cutoff; only theirs are built."""
    bank = source.load(part, keep=lambda ids: drawn(ids, seed, share))[0]
    return rows_at(bank, cutoffs, horizon_months, discount_rate, churn_months)


def learned(rows: Rows, cap: int, seed: int) -> Rows:
    """The rows of the customers drawn, or of a seeded sample of `cap` of them when more were drawn."""
    learners = np.unique(rows.customer_id)
    if learners.size <= cap:
        return rows
    keep = np.random.default_rng(seed).choice(learners, cap, replace=False)
    return rows.take(np.isin(rows.customer_id, keep))


def gather_learning_rows(source: Source, runner: Runner, cutoffs: list[dt.date], config: TrainingConfig) -> Rows:
    """Training rows at `cutoffs` of the customers to learn from, as training draws them: as many as the bank's size
    calls for (`TrainingConfig.learners`), each part giving its share, by the hash of the split; then a seeded sample
    of that many customers when the draw holds more."""
    customers = source.customers_in(source.parts)
    cap = config.learners(customers)
    parts = runner.map(
        learning_rows,
        source,
        label="learning rows",
        cutoffs=cutoffs,
        horizon_months=config.horizon_months,
        discount_rate=config.discount_rate,
        seed=config.seed,
        churn_months=config.churn_label_months,
        share=learning_share(customers, cap),
    )
    return learned(Rows.concat(parts), cap, config.seed)


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
