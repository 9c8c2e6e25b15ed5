"""Labels and eligibility as of a date T: who is scored, who has gone, and the value of the months after T."""

from __future__ import annotations

import numpy as np

from clv.common import dates
from clv.data.bank import Bank, per_customer
from clv.data.defaults import CHURN_MONTHS, DISCOUNT_RATE, HORIZON_MONTHS


def future_value(
    bank: Bank, as_of: int, horizon_months: int = HORIZON_MONTHS, discount_rate: float = DISCOUNT_RATE
) -> np.ndarray:
    """The label: discounted value of the `horizon_months` calendar months after the month of T.

    With a ledger, each month's net_margin; without one, positive transaction amounts dated in
    (T, T + horizon months], each discounted for its calendar month counted from T's month.
    """
    n = bank.size
    weights = np.concatenate([[1.0], dates.discount_factors(horizon_months, discount_rate)])
    t_month = int(dates.month_of(as_of))
    if bank.ledger is not None:
        led = bank.ledger
        ahead = led["month"] - t_month
        sel = (ahead >= 1) & (ahead <= horizon_months)
        return per_customer(led["cust"][sel], n, np.nan_to_num(led["net_margin"][sel]) * weights[ahead[sel]])
    x = bank.transactions
    end = dates.to_day(dates.shift_months(dates.from_day(as_of), horizon_months))
    sel = (x["day"] > as_of) & (x["day"] <= end) & (x["amount"] > 0)
    ahead = dates.month_of(x["day"][sel].astype(np.int64)) - t_month
    return per_customer(x["cust"][sel], n, x["amount"][sel] * weights[ahead])


def joined(bank: Bank, as_of: int) -> np.ndarray:
    """Customers who had joined by T; the others are not scored as of T (docs/domain.md)."""
    first = bank.first_day()
    return ~np.isnan(first) & (first <= as_of)


def former(bank: Bank, as_of: int) -> np.ndarray:
    """Customers who had closed every product by T: they bring nothing after (docs/domain.md), a structural zero.
    Without a products table nobody is known to have left."""
    p = bank.products
    if not p:
        return np.zeros(bank.size, bool)
    started, _, is_open = bank.product_state(float(as_of))
    return (per_customer(p["cust"][started], bank.size) > 0) & (per_customer(p["cust"][is_open], bank.size) == 0)


def eligible(bank: Bank, as_of: int) -> np.ndarray:
    """Customers the model learns from and is judged on as of T: joined by then and not gone."""
    return joined(bank, as_of) & ~former(bank, as_of)


def churned(bank: Bank, as_of: int, months: int = CHURN_MONTHS) -> np.ndarray:
    """The churn label as of T over `months` (docs/domain.md): 1 who left, 0 who stayed, NaN who cannot leave.

    With products: no open product at T + months, of the customers holding one at T (the others, NaN, had
    left already or never held one). Without products (a purchase log): no value-bearing transaction, a
    positive amount, in (T, T + months]."""
    end = dates.to_day(dates.shift_months(dates.from_day(as_of), months))
    if bank.products:
        cust = bank.products["cust"]
        held = per_customer(cust[bank.product_state(float(as_of))[2]], bank.size) > 0
        kept = per_customer(cust[bank.product_state(float(end))[2]], bank.size) > 0
        return np.where(held, (~kept).astype(np.float64), np.nan)
    x = bank.transactions
    sel = (x["day"] > as_of) & (x["day"] <= end) & (x["amount"] > 0)
    return (per_customer(x["cust"][sel], bank.size) == 0).astype(np.float64)
