"""Calendar helpers: days and months as integers, and the discount factor of docs/domain.md."""

from __future__ import annotations

import datetime as dt

import numpy as np

EPOCH = dt.date(1970, 1, 1)


def to_day(value: dt.date) -> int:
    """A date as days since 1970-01-01."""
    return (value - EPOCH).days


def from_day(day: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(day))


def month_of(days: np.ndarray | int) -> np.ndarray:
    """Calendar month index (months since 1970-01) of each day."""
    return np.asarray(days, dtype="int64").astype("datetime64[D]").astype("datetime64[M]").astype("int64")


def month_start(months: np.ndarray | int) -> np.ndarray:
    """First day (days since epoch) of each month index."""
    return np.asarray(months, dtype="int64").astype("datetime64[M]").astype("datetime64[D]").astype("int64")


def days_in_month(months: np.ndarray | int) -> np.ndarray:
    months = np.asarray(months, dtype="int64")
    return month_start(months + 1) - month_start(months)


def month_end(value: dt.date) -> dt.date:
    """The last day of the month containing value."""
    month = int(month_of(to_day(value)))
    return from_day(int(month_start(month + 1)) - 1)


def last_month_end(value: dt.date) -> dt.date:
    """The latest month end on or before value."""
    end = month_end(value)
    return end if end == value else value.replace(day=1) - dt.timedelta(days=1)


def add_months(value: dt.date, months: int) -> dt.date:
    """Month end `months` after the month end `value` (negative goes back)."""
    month = int(month_of(to_day(value))) + months
    return from_day(int(month_start(month + 1)) - 1)


def month_label(months: np.ndarray) -> np.ndarray:
    """Month indexes as 'YYYY-MM' strings."""
    return np.asarray(months, dtype="int64").astype("datetime64[M]").astype(str)


def discount_factors(horizon_months: int, annual_rate: float) -> np.ndarray:
    """Weight of the t-th month after the as-of month, t = 1..horizon: 1 / (1 + rate) ** (t / 12)."""
    t = np.arange(1, horizon_months + 1, dtype="float64")
    return 1.0 / (1.0 + annual_rate) ** (t / 12.0)


def day_of_month(days: np.ndarray | int) -> np.ndarray:
    days = np.asarray(days, dtype="int64")
    return days - month_start(month_of(days)) + 1


def shift_months(value: dt.date, months: int) -> dt.date:
    """The date `months` later: a month end stays a month end, another day keeps its day (clipped)."""
    if value == month_end(value):
        return add_months(value, months)
    month = value.month - 1 + months
    year, month = value.year + month // 12, month % 12 + 1
    last = month_end(dt.date(year, month, 1)).day
    return dt.date(year, month, min(value.day, last))


def months_between(start: np.ndarray, end: int) -> np.ndarray:
    """Whole calendar months from each day `start` to day `end` (a month counts once its day is reached)."""
    start = np.asarray(start, dtype="int64")
    return month_of(end) - month_of(start) - (day_of_month(end) < day_of_month(start))


def data_last_day(last_transaction_day: int | None, last_ledger_month: int | None) -> int:
    """The last date of a bank's data: its last transaction, or the end of its last ledger month."""
    candidates = [] if last_transaction_day is None else [int(last_transaction_day)]
    if last_ledger_month is not None:
        candidates.append(int(month_start(int(last_ledger_month) + 1)) - 1)
    if not candidates:
        raise ValueError("the data has no transaction and no ledger month to date it by")
    return max(candidates)
