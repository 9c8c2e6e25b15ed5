"""What a training run is told: the one set of options training, the backtest and `model.py train|backtest` share."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from clv.common import dates
from clv.data.defaults import DISCOUNT_RATE, HORIZON_MONTHS, HORIZONS, MAX_HORIZON
from clv.model.lifetime import Lifetime

# customers learned from (docs/protocol.md#the-training-sample): a share of the bank, never fewer than the floor (every
# training customer of a bank of up to about 25,000) and never more than the ceiling (the fit's time and memory)
TRAIN_CUSTOMERS_FLOOR = 15_000
TRAIN_CUSTOMERS_SHARE = 0.02
MAX_TRAIN_CUSTOMERS = 40_000
MIN_LEARNERS = 40  # fewer customers to learn from than this, and training refuses the bank


class TrainingConfigError(ValueError):
    """A training option out of its range, named with its value and the range, so that a caller (the CLI) can name
    the option as its own user knows it."""

    def __init__(self, option: str, value: object, rule: str) -> None:
        super().__init__(f"{option} {value}: {rule}")
        self.option, self.value, self.rule = option, value, rule


@dataclass(frozen=True)
class TrainingConfig:
    """The options of one training run (docs/protocol.md). Every one has a working default.

    Parameters
    ----------
    cutoff : the as-of date of the features; None: the latest whose labels are complete. A backtest trains at
        cutoffs of its own and refuses one here.
    horizon_months : the months of future value the model predicts (the headline horizon).
    churn_months : the churn probability is of leaving within these months; None: `horizon_months`.
    discount_rate : annual rate the future months' value is discounted at.
    horizons : the months of value predictions carry beside the headline, each judged where the data reaches.
    seed : the one seed of the split, the samples, the fit and the importance.
    extra_cutoffs : earlier quarters training also learns from, besides the cutoff.
    max_train_customers : training customers learned from at most (a seeded sample past it); None: as many as the
        bank's size calls for (`learners`).
    model_params : BankingCLVModel hyperparameters other than its defaults.
    """

    cutoff: dt.date | None = None
    horizon_months: int = HORIZON_MONTHS
    churn_months: int | None = None
    discount_rate: float = DISCOUNT_RATE
    horizons: tuple[int, ...] = HORIZONS
    seed: int = 42
    extra_cutoffs: int = 1
    max_train_customers: int | None = None
    model_params: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "horizons", tuple(self.horizons))  # a list given, a tuple kept
        for option in ("horizon_months", "churn_months"):
            value = getattr(self, option)
            if value is not None and value < 1:
                raise TrainingConfigError(option, value, "must be 1 or more")
        if not 0 <= self.discount_rate < 1:
            raise TrainingConfigError("discount_rate", self.discount_rate, "must be in [0, 1)")
        if not self.horizons or min(self.horizons) < 1 or max(self.horizons) > MAX_HORIZON:
            text = ",".join(map(str, self.horizons))
            raise TrainingConfigError("horizons", text, f"each horizon must be 1 to {MAX_HORIZON} months")
        if self.extra_cutoffs < 0:
            raise TrainingConfigError("extra_cutoffs", self.extra_cutoffs, "must be 0 or more")
        if self.max_train_customers is not None and self.max_train_customers < MIN_LEARNERS:
            raise TrainingConfigError(
                "max_train_customers", self.max_train_customers, f"must be {MIN_LEARNERS} or more"
            )

    @property
    def churn_label_months(self) -> int:
        """The months the churn label looks ahead: `churn_months`, by default the value's horizon."""
        return self.churn_months or self.horizon_months

    @property
    def label_months(self) -> int:
        """The months after a cutoff its labels need: the longer of the value's and the churn label's."""
        return max(self.horizon_months, self.churn_label_months)

    def learners(self, customers: int) -> int:
        """The training customers to learn from at most, in a bank of `customers`: `max_train_customers` when given,
        else TRAIN_CUSTOMERS_SHARE of the bank, at least TRAIN_CUSTOMERS_FLOOR and at most MAX_TRAIN_CUSTOMERS."""
        if self.max_train_customers is not None:
            return self.max_train_customers
        return min(MAX_TRAIN_CUSTOMERS, max(TRAIN_CUSTOMERS_FLOOR, round(TRAIN_CUSTOMERS_SHARE * customers)))

    @property
    def lifetime(self) -> Lifetime:
        """The horizons to fit, headline first, before any is measured."""
        others = sorted(set(self.horizons) - {self.horizon_months})
        return Lifetime((self.horizon_months, *others), self.churn_label_months, self.discount_rate)

    def learning_cutoffs(self, cutoff: dt.date) -> list[dt.date]:
        """The cutoffs training learns at: `cutoff`, then `extra_cutoffs` quarters before it."""
        return [cutoff, *(dates.add_months(cutoff, -3 * k) for k in range(1, self.extra_cutoffs + 1))]
