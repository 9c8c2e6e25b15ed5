"""One feature path: (customers, products, transactions, ledger, as-of date) to one row per customer.

Training, batch scoring and the API all call `build_features` on a `Bank`: whole tables become a
`Bank` through `bank_from_frames`, one API request through `bank_from_request`. Every feature uses
only what was known at the as-of date T (see DOMAIN.md); a missing table or column gives NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from clv import dates
from clv.contract import dense_ids
from clv.schema import (
    FAMILIES,
    PRODUCT_FAMILY,
    AcquisitionChannel,
    Channel,
    CustomerIn,
    ProductStatus,
    ProductType,
    Region,
    TransactionType,
    codes,
)

REGIONS = list(codes(Region))
ACQUISITION = list(codes(AcquisitionChannel))
PRODUCT_CODES = codes(ProductType)
TYPE_CODES = codes(TransactionType)
CHANNEL_CODES = codes(Channel)
FAMILY_OF_TYPE = np.array([FAMILIES.index(PRODUCT_FAMILY[t]) for t in ProductType])
CLOSED = codes(ProductStatus)[ProductStatus.CLOSED]
WINDOWS = (30, 90, 365)
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
PRODUCT_FEATURES: tuple[str, ...] = (
    *(f"open_{t}" for t in PRODUCT_CODES),
    "open_products",
    "products_ever",
    "opened_3m",
    "opened_12m",
    "closed_3m",
    "closed_12m",
    "months_since_last_open",
    *(f"{family}_balance" for family in FAMILIES),
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
LEDGER_COLUMNS = (
    "net_margin",
    *(f"{family}_balance" for family in FAMILIES),
    "interest_margin",
    "fee_income",
    "cost_to_serve",
    "credit_loss",
)


@dataclass
class Bank:
    """Tables as numpy columns; rows point to customers by position 0..n-1 (`cust`).

    Days are integers since 1970-01-01, months integers since 1970-01, unknown categories -1,
    unknown numbers NaN. `snapshot_day` is the day the product balances and tenure_months describe:
    balances are used only as of that day or later, never to look back.
    """

    customer_id: np.ndarray
    age: np.ndarray
    income: np.ndarray
    credit_score: np.ndarray
    region: np.ndarray
    acquisition: np.ndarray
    join_day: np.ndarray
    tenure_months: np.ndarray
    products: dict[str, np.ndarray] = field(default_factory=dict)
    transactions: dict[str, np.ndarray] = field(default_factory=dict)
    ledger: dict[str, np.ndarray] | None = None
    snapshot_day: float = np.nan

    @property
    def size(self) -> int:
        return int(self.customer_id.size)

    def first_day(self) -> np.ndarray:
        """Join day, or the first product or transaction when no join date is known."""
        first = self.join_day.copy()
        for table, column in ((self.products, "start"), (self.transactions, "day")):
            if table and table["cust"].size:
                seen = np.full(self.size, np.inf)
                np.minimum.at(seen, table["cust"], table[column])
                first = np.where(np.isnan(first), seen, first)
        return np.where(np.isinf(first), np.nan, first)

    def last_day(self) -> int:
        """The last date of the data: last transaction, or the end of the last ledger month."""
        days = self.transactions["day"] if self.transactions else np.zeros(0)
        months = self.ledger["month"] if self.ledger is not None else np.zeros(0)
        return dates.data_last_day(days.max() if days.size else None, months.max() if months.size else None)


def _codes(values: pd.Series | None, mapping: dict[str, int], n: int) -> np.ndarray:
    if values is None:
        return np.full(n, -1, np.int64)
    return pd.Series(values, copy=False).map(mapping).fillna(-1).to_numpy(np.int64)


def _days(values: pd.Series | None, n: int) -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    parsed = pd.to_datetime(values, errors="coerce").to_numpy("datetime64[D]")
    days = parsed.astype("int64").astype(np.float64)
    days[np.isnat(parsed)] = np.nan
    return days


def _num(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)


def bank_from_frames(
    customers: pd.DataFrame | None,
    transactions: pd.DataFrame,
    products: pd.DataFrame | None = None,
    ledger: pd.DataFrame | None = None,
) -> Bank:
    """Whole tables (as read by clv.contract) to a Bank. Customers come from customers.csv or, without
    it, from the transactions."""
    if customers is None or customers.empty:
        customers = pd.DataFrame({"customer_id": np.unique(transactions["customer_id"].to_numpy())})
    ids = customers["customer_id"].to_numpy(np.int64)
    low, high = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
    if dense_ids(ids) or not ids.size:
        table = np.zeros(high - low + 1, np.int64)
        table[ids - low] = np.arange(ids.size)

        def position(values: pd.Series) -> np.ndarray:
            return table[np.clip(values.to_numpy(np.int64) - low, 0, high - low)]

    else:
        order = np.argsort(ids, kind="stable")
        ids_sorted = ids[order]

        def position(values: pd.Series) -> np.ndarray:
            return order[np.minimum(np.searchsorted(ids_sorted, values.to_numpy(np.int64)), ids.size - 1)]

    n = ids.size
    bank = Bank(
        customer_id=ids,
        age=_num(customers, "age"),
        income=_num(customers, "income"),
        credit_score=_num(customers, "credit_score"),
        region=_codes(customers.get("region"), {r: i for i, r in enumerate(REGIONS)}, n),
        acquisition=_codes(customers.get("acquisition_channel"), {c: i for i, c in enumerate(ACQUISITION)}, n),
        join_day=_days(customers.get("join_date"), n),
        tenure_months=_num(customers, "tenure_months"),
    )
    bank.transactions = {
        "cust": position(transactions["customer_id"]),
        "day": _days(transactions["transaction_date"], len(transactions)),
        "amount": _num(transactions, "amount"),
        "type": _codes(transactions.get("transaction_type"), TYPE_CODES, len(transactions)),
        "channel": _codes(transactions.get("channel"), CHANNEL_CODES, len(transactions)),
    }
    if products is not None and len(products):
        bank.products = {
            "cust": position(products["customer_id"]),
            "type": _codes(products.get("product_type"), PRODUCT_CODES, len(products)),
            "start": _days(products["start_date"], len(products)),
            "end": _days(products.get("end_date"), len(products)),
            "balance": _num(products, "balance"),
            "credit_limit": _num(products, "credit_limit"),
            "closed": _codes(products.get("status"), codes(ProductStatus), len(products)) == CLOSED,
        }
    if ledger is not None and len(ledger):
        bank.ledger = {
            "cust": position(ledger["customer_id"]),
            "month": ledger["month"].to_numpy(str).astype("datetime64[M]").astype(np.int64),
            **{c: _num(ledger, c) for c in ledger.columns if c not in ("customer_id", "month")},
        }
    # product balances are those at the end of the data: never read them as of an earlier date
    bank.snapshot_day = float(bank.last_day())
    return bank


def bank_from_request(customer: CustomerIn, as_of: int) -> Bank:
    """One API request to a one-customer Bank. Its product balances and tenure are those of `as_of`."""
    products = customer.products
    txns = customer.transactions
    bank = Bank(
        customer_id=np.array([customer.customer_id]),
        age=np.array([customer.age], np.float64),
        income=np.array([customer.income], np.float64),
        credit_score=np.array([customer.credit_score], np.float64),
        region=np.array([REGIONS.index(customer.region)]),
        acquisition=np.array([ACQUISITION.index(customer.acquisition_channel)]),
        join_day=np.array([np.nan if customer.join_date is None else dates.to_day(customer.join_date)], np.float64),
        tenure_months=np.array([customer.tenure_months], np.float64),
        snapshot_day=float(as_of),
    )
    bank.products = {
        "cust": np.zeros(len(products), np.int64),
        "type": np.array([PRODUCT_CODES[p.product_type] for p in products], np.int64),
        "start": np.array([dates.to_day(p.start_date) for p in products], np.float64),
        "end": np.array([np.nan if p.end_date is None else dates.to_day(p.end_date) for p in products]),
        "balance": np.array([p.balance for p in products], np.float64),
        "credit_limit": np.array([np.nan if p.credit_limit is None else p.credit_limit for p in products]),
        "closed": np.array([p.status == ProductStatus.CLOSED for p in products], bool),
    }
    bank.transactions = {
        "cust": np.zeros(len(txns), np.int64),
        "day": np.array([dates.to_day(t.transaction_date) for t in txns], np.float64),
        "amount": np.array([t.amount for t in txns], np.float64),
        "type": np.array([-1 if t.transaction_type is None else TYPE_CODES[t.transaction_type] for t in txns]),
        "channel": np.array([-1 if t.channel is None else CHANNEL_CODES[t.channel] for t in txns]),
    }
    if customer.ledger:
        rows = customer.ledger
        bank.ledger = {
            "cust": np.zeros(len(rows), np.int64),
            "month": np.array([r.month for r in rows], "datetime64[M]").astype(np.int64),
            **{
                name: np.array([np.nan if getattr(r, name) is None else getattr(r, name) for r in rows], np.float64)
                for name in LEDGER_COLUMNS
            },
        }
    return bank


def _zero_nan(values: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(values), 0.0, values)


def _sum(index: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    return np.bincount(index, weights=weights, minlength=n).astype(np.float64)


def _months_between(start: np.ndarray, end: float) -> np.ndarray:
    """Whole calendar months from day `start` to day `end`."""
    if np.isnan(start).all():  # no dates to count from (an API request without join_date)
        return np.full(start.shape, np.nan)
    months = dates.months_between(_zero_nan(start).astype(np.int64), int(end))
    return np.where(np.isnan(start), np.nan, months.astype(np.float64))


def build_features(bank: Bank, as_of: int) -> np.ndarray:
    """Feature matrix (customers x FEATURE_NAMES) as of day `as_of`, from what was known on that day."""
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
    started, ended, is_open = _product_state(p, t)
    cust, ptype = p["cust"], p["type"]
    for code, name in enumerate(PRODUCT_CODES):
        out[f"open_{name}"] = _sum(cust[is_open & (ptype == code)], n)
    out["open_products"] = _sum(cust[is_open], n)
    out["products_ever"] = _sum(cust[started], n)
    age = t - p["start"]
    out["opened_3m"] = _sum(cust[started & (age < 91)], n)
    out["opened_12m"] = _sum(cust[started & (age < 365)], n)
    since_end = t - p["end"]
    out["closed_3m"] = _sum(cust[ended & (since_end < 91)], n)
    out["closed_12m"] = _sum(cust[ended & (since_end < 365)], n)
    last_open = np.full(n, -np.inf)
    np.maximum.at(last_open, cust[started], p["start"][started])
    out["months_since_last_open"] = np.where(np.isinf(last_open), np.nan, (t - last_open) / 30.4375)
    # balances are known as of the snapshot day, or when nothing is open
    known = t >= bank.snapshot_day
    unknown = np.where(out["open_products"] == 0, 0.0, np.nan)
    for i, family in enumerate(FAMILIES):
        sel = is_open & (FAMILY_OF_TYPE[np.maximum(ptype, 0)] == i) & (ptype >= 0)
        out[f"{family}_balance"] = _sum(cust[sel], n, np.abs(_zero_nan(p["balance"][sel]))) if known else unknown
    card = is_open & (ptype == PRODUCT_CODES[ProductType.CREDIT_CARD])
    out["credit_limit"] = _sum(cust[card], n, _zero_nan(p["credit_limit"][card]))
    return out


def _product_state(p: dict[str, np.ndarray], t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per product row: started by T, ended by T, open at T."""
    started = p["start"] <= t
    ended = ~np.isnan(p["end"]) & (p["end"] <= t)
    # a product closed after T was open at T; "Closed" without an end date counts as closed already
    return started, ended, started & ~ended & ~(p["closed"] & np.isnan(p["end"]))


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
    for w in WINDOWS:
        sel = age < w
        c = cust[sel]
        out[f"txn_count_{w}d"] = _sum(c, n)
        out[f"inflow_{w}d"] = _sum(c, n, inflow[sel])
        out[f"outflow_{w}d"] = _sum(c, n, outflow[sel])
    recent = age < 90
    for name in TREND_TYPES:
        out[f"count_90d_{name}"] = _sum(cust[recent & (kind == TYPE_CODES[name])], n)
    months_back = (age // 30.4375).astype(np.int64)
    active = np.bincount(cust * 13 + months_back, minlength=n * 13).reshape(n, 13) > 0
    out["active_months_12m"] = active[:, :12].sum(axis=1).astype(np.float64)
    count_365 = out["txn_count_365d"]
    with np.errstate(divide="ignore", invalid="ignore"):
        known_channel = _sum(cust[channel >= 0], n)
        branch = _sum(cust[channel == CHANNEL_CODES["Branch"]], n)
        digital = _sum(cust[(channel == CHANNEL_CODES["Online"]) | (channel == CHANNEL_CODES["Mobile"])], n)
        out["branch_share_365d"] = np.where(known_channel > 0, branch / known_channel, np.nan)
        out["digital_share_365d"] = np.where(known_channel > 0, digital / known_channel, np.nan)
    previous = (age >= 90) & (age < 180)
    out["count_trend_90d"] = np.log1p(out["txn_count_90d"]) - np.log1p(_sum(cust[previous], n))
    out["inflow_trend_90d"] = np.log1p(out["inflow_90d"]) - np.log1p(_sum(cust[previous], n, inflow[previous]))
    out["count_trend_90d"][count_365 == 0] = np.nan
    out["inflow_trend_90d"][count_365 == 0] = np.nan
    return out


def _ledger_features(bank: Bank, t: float, n: int, f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    led = bank.ledger
    if led is None:
        return {name: np.full(n, np.nan) for name in LEDGER_FEATURES}
    # ledger months count once they have ended on or before T
    day = int(t)
    last_full = int(dates.month_of(day)) - (0 if dates.day_of_month(day + 1) == 1 else 1)
    back = last_full - led["month"]  # 0 = the last full month
    seen = back >= 0
    cust, back = led["cust"][seen], back[seen]
    margin = led["net_margin"][seen]

    def window(months: int, values: np.ndarray, start: int = 0) -> np.ndarray:
        sel = (back >= start) & (back < start + months)
        return _sum(cust[sel], n, _zero_nan(values[sel]))

    year = back < 12
    out["margin_last_month"] = window(1, margin)
    out["margin_3m"] = window(3, margin)
    out["margin_prev_3m"] = window(3, margin, start=3)
    out["margin_12m"] = window(12, margin)
    months = _sum(cust[year], n)
    out["ledger_months_12m"] = months
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = out["margin_12m"] / months
        out["margin_std_12m"] = np.sqrt(np.maximum(window(12, margin**2) / months - mean**2, 0))
    out["negative_months_12m"] = _sum(cust[year & (margin < 0)], n)
    for part in ("interest_margin", "fee_income", "cost_to_serve", "credit_loss"):
        values = led.get(part)
        out[f"{part}_12m"] = window(12, led[part][seen]) if values is not None else np.full(n, np.nan)
    balances = {}
    had_row = _sum(cust[back == 0], n) > 0
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


def future_value(bank: Bank, as_of: int, horizon_months: int = 12, discount_rate: float = 0.10) -> np.ndarray:
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
        return _sum(led["cust"][sel], n, _zero_nan(led["net_margin"][sel]) * weights[ahead[sel]])
    x = bank.transactions
    end = dates.to_day(dates.shift_months(dates.from_day(as_of), horizon_months))
    sel = (x["day"] > as_of) & (x["day"] <= end) & (x["amount"] > 0)
    ahead = dates.month_of(x["day"][sel].astype(np.int64)) - t_month
    return _sum(x["cust"][sel], n, x["amount"][sel] * weights[ahead])


def joined(bank: Bank, as_of: int) -> np.ndarray:
    """Customers who had joined by T; the others are not scored as of T (DOMAIN.md)."""
    first = bank.first_day()
    return ~np.isnan(first) & (first <= as_of)


def former(bank: Bank, as_of: int) -> np.ndarray:
    """Customers who had closed every product by T: they bring nothing after (DOMAIN.md), a structural zero.
    Without a products table nobody is known to have left."""
    p = bank.products
    if not p:
        return np.zeros(bank.size, bool)
    started, _, is_open = _product_state(p, float(as_of))
    return (_sum(p["cust"][started], bank.size) > 0) & (_sum(p["cust"][is_open], bank.size) == 0)


def eligible(bank: Bank, as_of: int) -> np.ndarray:
    """Customers the model learns from and is judged on as of T: joined by then and not gone."""
    return joined(bank, as_of) & ~former(bank, as_of)


def concat_banks(banks: list[Bank]) -> Bank:
    """One-customer Banks of the same as-of date as one Bank, customers in order: build_features and the
    model then run once for all of them. Per customer nothing changes: its rows keep their order."""
    if len(banks) == 1:
        return banks[0]
    merged: dict[str, object] = {}
    for name in (f.name for f in fields(Bank)):
        values = [getattr(bank, name) for bank in banks]
        first = values[0]
        if isinstance(first, np.ndarray):
            merged[name] = np.concatenate(values)
        elif isinstance(first, dict):
            merged[name] = {
                key: np.concatenate([v[key] + i if key == "cust" else v[key] for i, v in enumerate(values)])
                for key in first
            }
        elif all(v == first or (v != v and first != first) for v in values):  # equal, or all NaN (or None)
            merged[name] = first
        else:
            raise ValueError(f"Bank.{name} differs between the customers; they cannot share one Bank")
    return Bank(**merged)
