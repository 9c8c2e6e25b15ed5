"""Feature rows: (customers, products, transactions, ledger, as-of date T) to one row per customer.

Training and batch scoring call `build_features` on a `Bank` (clv.data.bank); the API calls `feature_matrix`, the
same rows as an array, without the frame. Every feature uses only what was known at T (docs/protocol.md); a
missing table or column gives NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clv.common import dates
from clv.data.bank import (
    ACQUISITION,
    CHANNEL_CODES,
    FAMILY_OF_TYPE,
    PRODUCT_CODES,
    REGIONS,
    TYPE_CODES,
    Bank,
    per_customer,
)
from clv.data.schema import FAMILIES, LEDGER_PARTS, ProductType

WINDOWS = (30, 90, 365)
BANDS = (30, 90, 180)  # a year's transactions by age: under 30 days, 30 to 90, 90 to 180, 180 to 365
TREND_TYPES = ("Deposit", "Withdrawal", "Bill Payment", "Card Purchase", "Transfer")

LEDGER_FEATURES: tuple[str, ...] = (
    "margin_last_month",
    "margin_3m",
    "margin_prev_3m",
    "margin_12m",
    "margin_std_12m",
    "ledger_months_12m",
    "negative_months_12m",
    "interest_margin_12m",
    "fee_income_12m",
    "cost_to_serve_12m",
    "credit_loss_12m",
    "deposits_balance_change_3m",
    "investments_balance_change_3m",
    "loans_balance_change_12m",
)
FAMILY_BALANCES = tuple(f"{family}_balance" for family in FAMILIES)
PRODUCT_FEATURES: tuple[str, ...] = (
    *(f"open_{t}" for t in PRODUCT_CODES),
    "open_products",
    "products_ever",
    "opened_3m",
    "opened_12m",
    "closed_3m",
    "closed_12m",
    "months_since_last_open",
    *FAMILY_BALANCES,
    "credit_limit",
)
FEATURE_NAMES: tuple[str, ...] = (
    "age",
    "income",
    "credit_score",
    *(f"region_{r}" for r in REGIONS),
    *(f"acquisition_{c}" for c in ACQUISITION),
    "tenure_months",
    *PRODUCT_FEATURES,
    "card_utilisation",
    "recency_days",
    "history_days",
    *(f"txn_count_{w}d" for w in WINDOWS),
    *(f"inflow_{w}d" for w in WINDOWS),
    *(f"outflow_{w}d" for w in WINDOWS),
    *(f"count_90d_{t}" for t in TREND_TYPES),
    "active_months_12m",
    "branch_share_365d",
    "digital_share_365d",
    "count_trend_90d",
    "inflow_trend_90d",
    *LEDGER_FEATURES,
)
# one Index for every frame of feature rows: a request's frame then costs no new Index (a tenth of a millisecond)
FEATURE_COLUMNS = pd.Index(FEATURE_NAMES, dtype=object)


def _zero_nan(values: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(values), 0.0, values)


def _months_between(start: np.ndarray, end: float) -> np.ndarray:
    """Whole calendar months from day `start` to day `end`."""
    if np.isnan(start).all():  # no dates to count from (an API request without join_date)
        return np.full(start.shape, np.nan)
    months = dates.months_between(_zero_nan(start).astype(np.int64), int(end))
    return np.where(np.isnan(start), np.nan, months.astype(np.float64))


def build_features(bank: Bank, as_of: int) -> pd.DataFrame:
    """Feature rows (customers x FEATURE_NAMES, in the Bank's customer order) as of day `as_of`, from what
    was known on that day."""
    return pd.DataFrame(feature_matrix(bank, as_of), columns=FEATURE_COLUMNS, copy=False)


def feature_matrix(bank: Bank, as_of: int) -> np.ndarray:
    """build_features' values, columns in FEATURE_NAMES' order, without the frame around them: what a served
    request takes, where the frame would cost more than the features of one customer."""
    n = bank.size
    t = float(as_of)
    f: dict[str, np.ndarray] = {
        "age": bank.age,
        "income": bank.income,
        "credit_score": bank.credit_score,
    }
    for i, r in enumerate(REGIONS):
        f[f"region_{r}"] = (bank.region == i).astype(np.float64)
    for i, c in enumerate(ACQUISITION):
        f[f"acquisition_{c}"] = (bank.acquisition == i).astype(np.float64)
    tenure = _months_between(bank.join_day, t)
    given = bank.tenure_months + (t - bank.snapshot_day) / 30.4375  # tenure_months is counted at the snapshot
    tenure = np.where(np.isnan(tenure), given, tenure)
    if np.isnan(tenure).any():  # neither a join date nor a tenure: count from the first activity
        tenure = np.where(np.isnan(tenure), _months_between(bank.first_day(), t), tenure)
    f["tenure_months"] = np.maximum(tenure, 0)
    f.update(_product_features(bank, t, n))
    f.update(_transaction_features(bank, t, n))
    f.update(_ledger_features(bank, t, n, f))
    with np.errstate(divide="ignore", invalid="ignore"):
        f["card_utilisation"] = np.where(f["credit_limit"] > 0, f["cards_balance"] / f["credit_limit"], np.nan)
    matrix = np.empty((n, len(FEATURE_NAMES)))
    for j, name in enumerate(FEATURE_NAMES):
        matrix[:, j] = f[name]
    return matrix


def _product_features(bank: Bank, t: float, n: int) -> dict[str, np.ndarray]:
    p = bank.products
    out: dict[str, np.ndarray] = {}
    if not p:
        return dict.fromkeys(PRODUCT_FEATURES, np.full(n, np.nan))
    started, ended, is_open = bank.product_state(t)
    cust, ptype = p["cust"], p["type"]
    held, held_type = cust[is_open], ptype[is_open]
    by_type = _counts(held, held_type, len(PRODUCT_CODES), n)  # an unknown type (-1) is no type's
    for code, name in enumerate(PRODUCT_CODES):
        out[f"open_{name}"] = by_type[:, code]
    out["open_products"] = per_customer(held, n)
    out["products_ever"] = per_customer(cust[started], n)
    age = t - p["start"]
    out["opened_3m"] = per_customer(cust[started & (age < 91)], n)
    out["opened_12m"] = per_customer(cust[started & (age < 365)], n)
    since_end = t - p["end"]
    out["closed_3m"] = per_customer(cust[ended & (since_end < 91)], n)
    out["closed_12m"] = per_customer(cust[ended & (since_end < 365)], n)
    last_open = np.full(n, -np.inf)
    np.maximum.at(last_open, cust[started], p["start"][started])
    out["months_since_last_open"] = np.where(np.isinf(last_open), np.nan, (t - last_open) / 30.4375)
    # balances are known as of the snapshot day, or when nothing is open
    if t >= bank.snapshot_day:
        family = np.where(held_type >= 0, FAMILY_OF_TYPE[np.maximum(held_type, 0)], -1)
        balances = _counts(held, family, len(FAMILIES), n, np.abs(_zero_nan(p["balance"][is_open])))
        out.update((f"{name}_balance", balances[:, i]) for i, name in enumerate(FAMILIES))
    else:
        out.update(dict.fromkeys(FAMILY_BALANCES, np.where(out["open_products"] == 0, 0.0, np.nan)))
    card = is_open & (ptype == PRODUCT_CODES[ProductType.CREDIT_CARD])
    out["credit_limit"] = per_customer(cust[card], n, _zero_nan(p["credit_limit"][card]))
    return out


def _transaction_features(bank: Bank, t: float, n: int) -> dict[str, np.ndarray]:
    x = bank.transactions
    day = x["day"]
    seen = day <= t
    out: dict[str, np.ndarray] = {}
    last = np.full(n, -np.inf)
    np.maximum.at(last, x["cust"][seen], day[seen])
    out["recency_days"] = np.where(np.isinf(last), np.nan, t - last)
    first = np.full(n, np.inf)
    np.minimum.at(first, x["cust"][seen], day[seen])
    out["history_days"] = np.where(np.isinf(first), np.nan, t - first)
    # every other feature looks at most a year back: work on that year only
    year = seen & (day > t - 365)
    cust, age, amount = x["cust"][year], t - day[year], x["amount"][year]
    kind, channel = x["type"][year], x["channel"][year]
    inflow, outflow = np.maximum(amount, 0), np.maximum(-amount, 0)
    # counts in one pass each, by customer and age band, type or channel; sums of amounts keep a pass a window, so
    # that each adds its rows in the same order whatever the bands
    bands = _counts(cust, np.searchsorted(BANDS, age, side="right"), len(BANDS) + 1, n).cumsum(axis=1)
    for w in WINDOWS:
        sel = age < w
        c = cust[sel]
        out[f"txn_count_{w}d"] = bands[:, BANDS.index(w) if w in BANDS else -1]
        out[f"inflow_{w}d"] = per_customer(c, n, inflow[sel])
        out[f"outflow_{w}d"] = per_customer(c, n, outflow[sel])
    recent = age < 90
    kinds = _counts(cust[recent], kind[recent], len(TYPE_CODES), n)
    for name in TREND_TYPES:
        out[f"count_90d_{name}"] = kinds[:, TYPE_CODES[name]]
    months_back = (age // 30.4375).astype(np.int64)
    active = _counts(cust, months_back, 13, n) > 0
    out["active_months_12m"] = active[:, :12].sum(axis=1).astype(np.float64)
    count_365 = out["txn_count_365d"]
    channels = _counts(cust, channel, len(CHANNEL_CODES), n)
    with np.errstate(divide="ignore", invalid="ignore"):
        known_channel = channels.sum(axis=1)
        branch = channels[:, CHANNEL_CODES["Branch"]]
        digital = channels[:, CHANNEL_CODES["Online"]] + channels[:, CHANNEL_CODES["Mobile"]]
        out["branch_share_365d"] = np.where(known_channel > 0, branch / known_channel, np.nan)
        out["digital_share_365d"] = np.where(known_channel > 0, digital / known_channel, np.nan)
    previous = (age >= 90) & (age < 180)
    out["count_trend_90d"] = np.log1p(out["txn_count_90d"]) - np.log1p(
        bands[:, BANDS.index(180)] - out["txn_count_90d"]
    )
    out["inflow_trend_90d"] = np.log1p(out["inflow_90d"]) - np.log1p(per_customer(cust[previous], n, inflow[previous]))
    out["count_trend_90d"][count_365 == 0] = np.nan
    out["inflow_trend_90d"][count_365 == 0] = np.nan
    return out


def _counts(cust: np.ndarray, code: np.ndarray, codes: int, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Rows a customer has of each code 0..codes-1 (or the sum of their `weights`), (n, codes); a negative code
    (unknown) is not counted. A cell adds its rows in their order, as per_customer over them alone would."""
    code = code.astype(np.int64, copy=False)  # a request without transactions gives an empty float array
    known = code >= 0
    if not known.all():
        cust, code = cust[known], code[known]
        weights = None if weights is None else weights[known]
    sums = np.bincount(cust * codes + code, weights, minlength=n * codes)
    return sums.reshape(n, codes).astype(np.float64, copy=False)  # counts are integers; sums float64 already


def _ledger_features(bank: Bank, t: float, n: int, f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    led = bank.ledger
    if led is None:
        return dict.fromkeys(LEDGER_FEATURES, np.full(n, np.nan))  # one array: the matrix copies it
    # ledger months count once they have ended on or before T
    day = int(t)
    last_full = int(dates.month_of(day)) - (0 if dates.day_of_month(day + 1) == 1 else 1)
    back = last_full - led["month"]  # 0 = the last full month
    seen = back >= 0
    cust, back = led["cust"][seen], back[seen]
    margin = led["net_margin"][seen]

    def window(months: int, values: np.ndarray, start: int = 0) -> np.ndarray:
        sel = (back >= start) & (back < start + months)
        return per_customer(cust[sel], n, _zero_nan(values[sel]))

    year = back < 12
    out["margin_last_month"] = window(1, margin)
    out["margin_3m"] = window(3, margin)
    out["margin_prev_3m"] = window(3, margin, start=3)
    out["margin_12m"] = window(12, margin)
    months = per_customer(cust[year], n)
    out["ledger_months_12m"] = months
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = out["margin_12m"] / months
        out["margin_std_12m"] = np.sqrt(np.maximum(window(12, margin**2) / months - mean**2, 0))
    out["negative_months_12m"] = per_customer(cust[year & (margin < 0)], n)
    for part in LEDGER_PARTS:
        values = led.get(part)
        out[f"{part}_12m"] = window(12, led[part][seen]) if values is not None else np.full(n, np.nan)
    balances = {}
    had_row = per_customer(cust[back == 0], n) > 0
    for family in FAMILIES:
        values = led.get(f"{family}_balance")
        balances[family] = None if values is None else values[seen]
        if values is not None:  # the ledger's month-end balance where it has the month, else the products'
            out[f"{family}_balance"] = np.where(had_row, window(1, balances[family]), f[f"{family}_balance"])

    def change(family: str, months: int) -> np.ndarray:
        if balances[family] is None:
            return np.full(n, np.nan)
        return window(1, balances[family]) - window(1, balances[family], start=months)

    out["deposits_balance_change_3m"] = change("deposits", 3)
    out["investments_balance_change_3m"] = change("investments", 3)
    out["loans_balance_change_12m"] = change("loans", 12)
    return out
