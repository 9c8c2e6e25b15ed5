"""Value over several horizons, and the month-by-month curve it is the sum of (docs/domain.md#lifetime):
P(still a customer in month m) x the margin of a customer who stays, discounted.

The model predicts two things where labels exist: the value of the headline horizon (12 months by default) and
the probability of leaving within the churn label's months. The curve is what these imply:

- survival: a constant monthly hazard, q = (1 - p) ** (1 / churn_months), so P(still a customer at m) = q ** m;
- the margin of a customer who stays drifts from the customer's own level back towards a settled one, as margins
  do (a credit loss passes, a promotional rate ends): mu_m = settled + (own - settled) * reversion ** m. The
  customer's own level is the one for which the discounted curve sums to the headline value exactly; `settled` and
  `reversion` are fitted on what really happened after an earlier cutoff (clv.model.horizons), and a model that
  could not fit them keeps the margin level (reversion 1);
- the value of horizon H: the discounted curve summed to H, in closed form.

A longer horizon's interval is the headline's band, its half-widths scaled by the horizon's survival annuity over
the headline's, then widened by a conformal margin measured on realized outcomes where the data reaches that far,
and carried over, scaled, from the longest horizon measured where it does not: such a horizon is an
extrapolation, and the model card says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from clv.model import conformal

REVERSIONS = np.round(np.arange(0.80, 1.0001, 0.005), 3)  # the monthly reversions tried when fitting


def _annuity(x: np.ndarray, months: int) -> np.ndarray:
    """sum(x ** m, m = 1..months), in closed form (x = v q, in [0, 1])."""
    flat = x > 1.0 - 1e-12
    safe = np.where(flat, 0.5, x)
    return np.where(flat, float(months), safe * (1.0 - safe**months) / (1.0 - safe))


@dataclass(frozen=True)
class Lifetime:
    """How a fitted model's headline value and churn probability extend to `horizons` (months, headline first)."""

    horizons: tuple[int, ...]
    churn_months: int
    discount_rate: float
    reversion: float = 1.0  # of a stayer's margin towards `settled`, a month
    settled: float = 0.0  # the monthly margin stayers' margins drift towards
    # the conformal margin of each horizon past the headline, by group ("ledger", "no_ledger" or "all"); a horizon
    # missing from it has none (its band is the headline's, scaled)
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

    def only(self, months: int) -> Lifetime:
        """The headline and `months` alone, without margins: a horizon's band before its own margin is measured."""
        horizons = (self.headline,) if months == self.headline else (self.headline, months)
        return replace(self, horizons=horizons, margins={}, judged=())

    @property
    def _discount(self) -> float:
        return (1.0 + self.discount_rate) ** (-1.0 / 12.0)

    def monthly_survival(self, churn: np.ndarray) -> np.ndarray:
        """q: the probability of still being a customer a month on. Without a churn probability (NaN: a model
        that learned none because nobody left) a customer stays."""
        # NaN as 0 by where, not nan_to_num (four times slower on a served call's few rows; the clip makes them equal)
        keep = 1.0 - np.clip(np.where(np.isnan(churn), 0.0, churn), 0.0, 1.0 - 1e-9)  # a sure leaver still has a month
        return keep ** (1.0 / self.churn_months)

    def _parts(self, point: np.ndarray, churn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x = v q, the discounted survival of a month, the customer's own margin above the settled one,
        (own - settled), from the anchor (the curve sums to `point` at the headline), and the headline's annuity."""
        x = self._discount * self.monthly_survival(churn)
        headline = _annuity(x, self.headline)
        above = (point - self.settled * headline) / _annuity(x * self.reversion, self.headline)
        return x, above, headline

    def value(self, point: np.ndarray, churn: np.ndarray, months: int) -> np.ndarray:
        """The discounted value of the first `months` months."""
        x, above, _ = self._parts(point, churn)
        return self.settled * _annuity(x, months) + above * _annuity(x * self.reversion, months)

    def spread(self, churn: np.ndarray, months: int) -> np.ndarray:
        """How much wider than the headline's a horizon's band is: the ratio of their survival annuities."""
        x = self._discount * self.monthly_survival(churn)
        return _annuity(x, months) / _annuity(x, self.headline)

    def values(
        self, point: np.ndarray, low: np.ndarray, high: np.ndarray, churn: np.ndarray, group: np.ndarray | None
    ) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Value, interval low and high of every horizon. `group` says which rows carry a ledger (their margin
        is "ledger", the others' "no_ledger"); None: the one margin "all"."""
        out = {self.headline: (point, low, high)}
        longer = [months for months in self.horizons if months != self.headline]
        if not longer:
            return out
        x, above, headline = self._parts(point, churn)
        reverting = x * self.reversion
        for months in longer:
            survived = _annuity(x, months)
            value = self.settled * survived + above * _annuity(reverting, months)
            spread = survived / headline
            lo, hi = value + (low - point) * spread, value + (high - point) * spread
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
        months = np.arange(1, self.longest + 1)
        survival = self.monthly_survival(churn)[:, None] ** months
        _, above, _ = self._parts(point, churn)
        stayer = self.settled + above[:, None] * self.reversion**months
        expected = survival * stayer
        return {
            "month": months,
            "survival": survival,
            "expected_margin": expected,
            "cumulative_clv": np.cumsum(expected * self._discount**months, axis=1),
        }

    def fit_reversion(self, point: np.ndarray, churn: np.ndarray, actual: np.ndarray, months: int) -> Lifetime:
        """The reversion and settled margin that predict `actual`, the realized value of `months` months, best (least
        squares; for each reversion tried the settled margin is linear, in closed form)."""
        best = None
        for reversion in REVERSIONS:
            x = self._discount * self.monthly_survival(churn)
            fixed = point * _annuity(x * reversion, months) / _annuity(x * reversion, self.headline)
            slope = _annuity(x, months) - _annuity(x * reversion, months) * (
                _annuity(x, self.headline) / _annuity(x * reversion, self.headline)
            )
            settled = float(np.sum(slope * (actual - fixed)) / max(float(np.sum(slope**2)), 1e-12))
            error = float(np.mean((fixed + settled * slope - actual) ** 2))
            if best is None or error < best[0]:
                best = (error, float(reversion), settled)
        return replace(self, reversion=best[1], settled=best[2])
