"""Value over several horizons, and the month-by-month curve it is the sum of (docs/domain.md#lifetime):
P(still a customer in month m) x the margin of a customer who stays, discounted.

The model predicts two things where labels exist: the value of the headline horizon (12 months by default) and
the probability of leaving within the churn label's months. The curve is what these two imply under a constant
monthly hazard:

- the monthly survival q = (1 - p) ** (1 / churn_months), so that P(still a customer at month m) = q ** m;
- the margin of a customer who stays, mu, the one amount for which the discounted curve sums to the headline:
  mu * sum(v**m q**m, m = 1..headline) = value, with v = (1 + rate) ** (-1 / 12) the monthly discount;
- the value of horizon H, mu * sum((v q)**m, m = 1..H): the headline times the ratio of the two annuities.

The headline stays exactly what the model predicts; a longer horizon's interval is the headline's band scaled by
the same ratio, then widened by a conformal margin measured on what really happened after an earlier cutoff
(clv.model.training) where the data reaches that far, and carried over from the longest horizon measured where
it does not: such a horizon is an extrapolation, and the model card says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clv.model import conformal


@dataclass(frozen=True)
class Lifetime:
    """How a fitted model's headline value and churn probability extend to `horizons` (months, headline first)."""

    horizons: tuple[int, ...]
    churn_months: int
    discount_rate: float
    # the conformal margin of each horizon past the headline, by group ("ledger", "no_ledger" or "all"); a horizon
    # missing from it has none yet (its band is the headline's, scaled)
    margins: dict[int, dict[str, float]] = field(default_factory=dict)
    judged: tuple[int, ...] = ()  # the horizons whose margins were measured on realized outcomes

    def __post_init__(self) -> None:
        if not self.horizons or any(h < 1 for h in self.horizons):
            raise ValueError(f"horizons must be positive months, got {self.horizons}")
        if len(set(self.horizons)) != len(self.horizons):
            raise ValueError(f"horizons must differ from each other, got {self.horizons}")

    @property
    def headline(self) -> int:
        return self.horizons[0]

    @property
    def longest(self) -> int:
        return max(self.horizons)

    def monthly_survival(self, churn: np.ndarray) -> np.ndarray:
        """q: the probability of still being a customer a month on. Without a churn probability (NaN: a model
        that learned none because nobody left) a customer stays."""
        keep = 1.0 - np.clip(np.nan_to_num(churn, nan=0.0), 0.0, 1.0)
        return keep ** (1.0 / self.churn_months)

    def _annuity(self, x: np.ndarray, months: int) -> np.ndarray:
        """sum(x ** m, m = 1..months), in closed form (x = v q lies in [0, 1))."""
        flat = np.isclose(x, 1.0)
        safe = np.where(flat, 0.5, x)
        return np.where(flat, float(months), safe * (1.0 - safe**months) / (1.0 - safe))

    def ratio(self, churn: np.ndarray, months: int) -> np.ndarray:
        """The value of `months` over the headline's, per customer."""
        x = self._discount * self.monthly_survival(churn)
        return self._annuity(x, months) / self._annuity(x, self.headline)

    def only(self, months: int) -> Lifetime:
        """The headline and `months` alone, without margins: a horizon's band before its own margin is measured."""
        horizons = (self.headline,) if months == self.headline else (self.headline, months)
        return Lifetime(horizons, self.churn_months, self.discount_rate)

    @property
    def _discount(self) -> float:
        return (1.0 + self.discount_rate) ** (-1.0 / 12.0)

    def values(
        self, point: np.ndarray, low: np.ndarray, high: np.ndarray, churn: np.ndarray, group: np.ndarray | None
    ) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Value, interval low and high of every horizon. `group` names each row's margin ("ledger"/"no_ledger"
        as bool: True for a row with a ledger; None: the one margin "all")."""
        out = {}
        for months in self.horizons:
            ratio = self.ratio(churn, months)
            value, lo, hi = point * ratio, low * ratio, high * ratio
            margin = self.margins.get(months)
            if margin is not None:
                by = margin["all"] if group is None else np.where(group, margin["ledger"], margin["no_ledger"])
                lo, hi = conformal.widen(value, lo, hi, by)
            out[months] = (value, np.minimum(lo, value), np.maximum(hi, value))
        return out

    def curve(self, point: np.ndarray, churn: np.ndarray) -> dict[str, np.ndarray]:
        """Month by month up to the longest horizon (rows: customers, columns: months 1..longest): the survival,
        the expected margin (survival x the margin of a customer who stays) and the discounted value so far,
        which at month H is the H-month value."""
        q = self.monthly_survival(churn)[:, None]
        months = np.arange(1, self.longest + 1)
        survival = q**months
        x = self._discount * q[:, 0]
        stayer = point / self._annuity(x, self.headline)
        expected = stayer[:, None] * survival
        return {
            "month": months,
            "survival": survival,
            "expected_margin": expected,
            "cumulative_clv": np.cumsum(expected * self._discount**months, axis=1),
        }
