"""The synthetic bank: customers whose future margin follows hidden traits their past only partly shows.

Run `python data_gen.py --help`. The simulation steps month by month over whole columns of customers;
each customer carries hidden traits (engagement, wallet share, price sensitivity, churn propensity,
credit risk) that drift, and a portfolio of products whose balances, transactions and monthly profit
follow from those traits. `--write-oracle` also writes each customer's expected 12-month value as of
the last month end minus 12 months, estimated by simulating that future many times.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
from faker import Faker

from clv import dates
from clv.cli import OneLineParser, OptionError, parse_date
from clv.io import write_csv
from clv.schema import AcquisitionChannel, Channel, ProductStatus, ProductType, Region, TransactionType

logger = logging.getLogger(__name__)

SAV, CHK, CARD, MORT, INV, LOAN = range(6)
PRODUCT_TYPES = [t.value for t in ProductType]
# Transaction kinds of the simulation; both loan kinds are written as "Loan Payment".
DEP, WDR, TRF, BILL, FEE, SPEND, MORT_PAY, LOAN_PAY = range(8)
KIND_TYPE = np.array([list(TransactionType).index(t) for t in (
    TransactionType.DEPOSIT, TransactionType.WITHDRAWAL, TransactionType.TRANSFER,
    TransactionType.BILL_PAYMENT, TransactionType.FEE, TransactionType.CARD_PURCHASE,
    TransactionType.LOAN_PAYMENT, TransactionType.LOAN_PAYMENT)], dtype=np.int8)  # fmt: skip
# The product each kind moves money on: first held product of the list.
KIND_PRODUCTS = ((CHK, SAV), (CHK, SAV), (CHK, SAV, INV), (CHK,), (CHK, SAV), (CARD,), (MORT,), (LOAN,))
ONLINE, MOBILE, BRANCH, ATM = range(4)

FTP_RATE = 0.03  # what the treasury pays for deposits and charges for funding loans
MAX_PRODUCTS_PER_CUSTOMER = 5
ORACLE_REPLICAS = 32


@dataclass
class State:
    """Everything the simulation knows of a set of customers at a month end (one row per customer)."""

    engagement: np.ndarray
    wallet: np.ndarray
    price: np.ndarray
    churn: np.ndarray
    risk: np.ndarray
    drifting: np.ndarray
    income: np.ndarray
    age: np.ndarray
    digital: np.ndarray
    active: np.ndarray
    held: np.ndarray  # (n, 6) bool
    balance: np.ndarray  # (n, 6)
    payment: np.ndarray  # (n, 6) monthly instalment of mortgage and personal loan
    rate: np.ndarray  # (n, 6) annual rate paid (deposits) or charged (credit)
    limit: np.ndarray
    opened_ever: np.ndarray

    def take(self, index: np.ndarray) -> State:
        return State(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def draw_customers(n: int, start: dt.date, end: dt.date, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Visible attributes and correlated hidden traits."""
    z = rng.standard_normal((8, n))
    age = np.clip(np.round(44 + 15 * z[0]), 18, 90)
    income = np.round(np.exp(np.log(52_000) + 0.45 * z[1] + 0.004 * (age - 44) - 0.00015 * (age - 50) ** 2), -2)
    income_z = (np.log(income) - np.log(52_000)) / 0.45
    credit = np.clip(np.round(690 + 45 * (0.5 * income_z + 0.2 * (age - 44) / 15) + 55 * z[2]), 300, 850)
    region = rng.choice(len(Region), n, p=[0.3, 0.25, 0.25, 0.2])
    acquisition = rng.choice(len(AcquisitionChannel), n, p=[0.35, 0.35, 0.15, 0.15])
    online = acquisition == list(AcquisitionChannel).index(AcquisitionChannel.ONLINE)
    referral = acquisition == list(AcquisitionChannel).index(AcquisitionChannel.REFERRAL)
    credit_z = (credit - 690) / 70
    start_day, end_day = dates.to_day(start), dates.to_day(end)
    before = rng.random(n) < 0.55
    first_day = dates.to_day(dt.date(1995, 1, 1))
    join = np.where(
        before,
        rng.integers(first_day, start_day, n),
        rng.integers(start_day, end_day - 30, n),
    )
    return {
        "age": age,
        "income": income,
        "credit_score": credit,
        "region": region,
        "acquisition": acquisition,
        "join_day": join,
        "engagement": 0.35 * online - 0.012 * (age - 44) + 0.3 * referral + 0.9 * z[3],
        "wallet": 0.45 * income_z + 0.85 * z[4],
        "price": 0.3 * online + 0.9 * z[5],
        "churn": 0.35 * z[5] - 0.2 * referral + 0.9 * z[6],
        "risk": -0.6 * credit_z + 0.8 * z[7],
        "digital": _sigmoid(1.0 + 0.8 * z[3] - 0.04 * (age - 44) + 0.8 * online),
    }


def open_products(state: State, rows: np.ndarray, types: np.ndarray, rng: np.random.Generator) -> None:
    """Open product `types[k]` for customer `rows[k]`: set its balance, rate, instalment and limit."""
    if rows.size == 0:
        return
    income, wallet, risk = state.income[rows], np.clip(state.wallet[rows], -3, 3), state.risk[rows]
    noise = rng.lognormal(0.0, 0.5, rows.size)
    balance = np.select(
        [types == SAV, types == CHK, types == CARD, types == MORT, types == INV, types == LOAN],
        [
            0.25 * income * np.exp(0.9 * wallet) * noise,
            0.05 * income * np.exp(0.5 * wallet) * noise,
            0.0,
            income * rng.uniform(2.5, 4.5, rows.size),
            0.5 * income * np.exp(0.9 * wallet) * noise,
            income * rng.uniform(0.1, 0.35, rows.size),
        ],
    )
    rate = np.select(
        [types == SAV, types == CHK, types == CARD, types == MORT, types == INV, types == LOAN],
        [
            0.012 + 0.008 * _sigmoid(2 * state.price[rows]),
            np.full(rows.size, 0.001),
            0.17 + 0.04 * _sigmoid(risk),
            0.042 + 0.01 * _sigmoid(risk),
            np.zeros(rows.size),
            0.07 + 0.07 * _sigmoid(risk),
        ],
    )
    term = np.where(types == MORT, 300, 48)
    monthly = rate / 12
    loan = (types == MORT) | (types == LOAN)
    payment = np.zeros(rows.size)
    payment[loan] = balance[loan] * monthly[loan] / (1 - (1 + monthly[loan]) ** -term[loan])
    state.held[rows, types] = True
    state.balance[rows, types] = np.round(balance, 2)
    state.rate[rows, types] = np.round(rate, 4)
    state.payment[rows, types] = payment
    card = types == CARD
    state.limit[rows[card]] = np.round(income[card] * rng.uniform(0.08, 0.25, card.sum()), -2)
    np.add.at(state.opened_ever, rows, 1)


def first_products(state: State, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The products a new customer starts with: (n, 6) bool, at least one each."""
    n = rows.size
    e, w, age = state.engagement[rows], state.wallet[rows], state.age[rows]
    p = np.column_stack([
        _sigmoid(-0.3 + 0.5 * w),
        np.full(n, 0.85),
        _sigmoid(-0.6 + 0.4 * e - 0.3 * state.risk[rows]),
        _sigmoid(-1.6 + 0.5 * w) * (age < 65) * (age > 24),
        _sigmoid(-2.2 + 1.0 * w + 0.02 * (age - 40)),
        _sigmoid(-2.3 + 0.4 * state.risk[rows]),
    ])  # fmt: skip
    pick = rng.random((n, 6)) < p
    pick[~pick.any(axis=1), CHK] = True
    return pick & (np.cumsum(pick, axis=1) <= MAX_PRODUCTS_PER_CUSTOMER)


def step(state: State, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Advance one calendar month for the active customers; return its events, counts and profit."""
    n = state.active.size
    act = state.active.copy()
    # hidden traits drift; a few customers start drifting away, and that shows only slowly
    state.drifting |= act & (rng.random(n) < 0.006)
    state.engagement += 0.1 * rng.standard_normal(n) - 0.01 * state.engagement - 0.12 * state.drifting
    state.wallet += 0.07 * rng.standard_normal(n) - 0.005 * state.wallet - 0.1 * state.drifting

    held = state.held
    n_held = held.sum(axis=1)
    logit = -5.1 + 0.6 * state.churn - 0.35 * state.engagement + 1.3 * state.drifting + 0.5 * (n_held == 1)
    logit -= 0.5 * held[:, MORT] + 0.3 * (held[:, CHK] & (state.digital > 0.6))
    churned = act & (rng.random(n) < _sigmoid(logit))

    # price-sensitive customers take their mortgage and investments to a cheaper bank
    shop = _sigmoid(2 * state.price - 1)
    close_p = np.column_stack([
        np.full(n, 0.003), np.full(n, 0.0015), np.full(n, 0.004),
        0.0005 + 0.008 * shop, 0.001 + 0.008 * shop * _sigmoid(-state.wallet), np.full(n, 0.004),
    ])  # fmt: skip
    closed = held & act[:, None] & (rng.random((n, 6)) < close_p)
    paid_off = held & (state.payment > 0) & (state.balance <= state.payment * 1.01)
    closed |= paid_off & act[:, None]
    closed[churned] = held[churned]
    churned |= act & held.any(axis=1) & ~(held & ~closed).any(axis=1)

    e, w = state.engagement, np.clip(state.wallet, -3, 3)
    room = act & ~churned & (state.opened_ever < MAX_PRODUCTS_PER_CUSTOMER)
    open_p = 0.004 * np.exp(0.5 * e)[:, None] * np.array([1.0, 0.6, 1.0, 0.25, 0.5, 0.4])
    open_p[:, MORT] *= (state.age < 62) * np.exp(0.4 * w)
    open_p[:, INV] *= np.exp(0.8 * w)
    opened = ~held & room[:, None] & (rng.random((n, 6)) < open_p)
    opened &= np.cumsum(opened, axis=1) <= (MAX_PRODUCTS_PER_CUSTOMER - state.opened_ever)[:, None]

    # balances: deposits drift toward what the wallet share would hold, loans amortise
    bal = state.balance
    target_chk = 0.06 * state.income * np.exp(0.5 * w)
    target_sav = 0.25 * state.income * np.exp(0.9 * w)
    target_inv = 0.5 * state.income * np.exp(0.9 * w)
    bal[:, CHK] = np.maximum(
        0, bal[:, CHK] + 0.3 * (target_chk - bal[:, CHK]) + 0.12 * target_chk * rng.standard_normal(n)
    )
    bal[:, SAV] = np.maximum(
        0, bal[:, SAV] + 0.04 * (target_sav - bal[:, SAV]) + 0.02 * target_sav * rng.standard_normal(n)
    )
    bal[:, INV] = np.maximum(
        0, bal[:, INV] * np.exp(0.004 + 0.045 * rng.standard_normal(n)) + 0.02 * (target_inv - bal[:, INV])
    )
    for k in (MORT, LOAN):
        bal[:, k] = np.maximum(0, bal[:, k] * (1 + state.rate[:, k] / 12) - state.payment[:, k])
    utilisation = _sigmoid(-1.2 + 0.9 * state.risk + 0.4 * rng.standard_normal(n))
    bal[:, CARD] = state.limit * utilisation
    bal *= held
    bal[:] = np.round(bal, 2)

    # transactions this month, on products held all month
    steady = held & ~closed
    g = np.exp(0.35 * np.clip(e, -3, 3)) * act
    has_dep = steady[:, CHK] | steady[:, SAV]
    fee = steady[:, CHK] & (bal[:, CHK] < 1_500)
    counts = np.column_stack([
        rng.poisson(1.1 * g * has_dep),
        rng.poisson(0.9 * g * has_dep),
        rng.poisson(0.5 * g * (has_dep | steady[:, INV])),
        rng.poisson(1.3 * g * steady[:, CHK]),
        fee.astype(np.int64),
        rng.poisson(3.5 * g * steady[:, CARD]),
        steady[:, MORT].astype(np.int64),
        steady[:, LOAN].astype(np.int64),
    ]) * act[:, None]  # fmt: skip

    spread = np.zeros_like(bal)
    spread[:, [SAV, CHK]] = FTP_RATE - state.rate[:, [SAV, CHK]]
    spread[:, CARD] = (state.rate[:, CARD] - FTP_RATE) * utilisation
    spread[:, [MORT, LOAN]] = state.rate[:, [MORT, LOAN]] - FTP_RATE - 0.005
    interest = (spread * bal).sum(axis=1) / 12
    fees = 8.0 * fee + 0.015 * 45 * counts[:, SPEND] + 0.008 / 12 * bal[:, INV] + 0.4 * counts[:, TRF]
    branch_share = 1 - state.digital
    cost = 3.0 * held.sum(axis=1) + counts.sum(axis=1) * (0.12 + 3.0 * branch_share)
    pd_annual = _sigmoid(-4.0 + 1.1 * state.risk)
    exposure = 0.85 * bal[:, CARD] + 0.6 * bal[:, LOAN] + 0.12 * bal[:, MORT]
    loss = pd_annual / 12 * exposure
    on_books = act.astype(np.float64)
    parts = {
        "interest_margin": np.round(interest * on_books, 2),
        "fee_income": np.round(fees * on_books, 2),
        "cost_to_serve": np.round(cost * on_books, 2),
        "credit_loss": np.round(loss * on_books, 2),
    }
    parts["net_margin"] = np.round(
        parts["interest_margin"] + parts["fee_income"] - parts["cost_to_serve"] - parts["credit_loss"], 2
    )

    # closing takes effect after the month's profit is booked
    state.held &= ~closed
    state.balance[closed] = 0.0
    state.active &= ~churned
    return {"churned": churned, "closed": closed, "opened": opened, "steady": steady, "counts": counts, **parts}


class Ledger:
    """Collects per-month columns and hands them out as one Arrow table."""

    def __init__(self) -> None:
        self.chunks: dict[str, list[np.ndarray]] = {}

    def add(self, **columns: np.ndarray) -> None:
        for name, values in columns.items():
            self.chunks.setdefault(name, []).append(values)

    def column(self, name: str) -> np.ndarray:
        return np.concatenate(self.chunks[name])


@dataclass(frozen=True)
class Config:
    customers: int = 10_000
    start: dt.date = dt.date(2020, 1, 1)
    end: dt.date = dt.date(2024, 12, 31)
    seed: int = 42
    oracle: bool = False


def simulate(config: Config) -> dict[str, pa.Table]:
    """Run the synthetic bank; return its tables by name (and `oracle_clv` when asked)."""
    main_seq, display_seq, oracle_seq = np.random.SeedSequence(config.seed).spawn(3)
    rng = np.random.default_rng(main_seq)
    n = config.customers
    attrs = draw_customers(n, config.start, config.end, rng)
    state = State(
        engagement=attrs["engagement"], wallet=attrs["wallet"], price=attrs["price"], churn=attrs["churn"],
        risk=attrs["risk"], drifting=np.zeros(n, bool), income=attrs["income"], age=attrs["age"].copy(),
        digital=attrs["digital"], active=np.zeros(n, bool), held=np.zeros((n, 6), bool),
        balance=np.zeros((n, 6)), payment=np.zeros((n, 6)), rate=np.zeros((n, 6)),
        limit=np.zeros(n), opened_ever=np.zeros(n, np.int64),
    )  # fmt: skip
    products = Ledger()
    pid = np.zeros((n, 6), np.int64)
    next_pid = 1

    def record_opens(rows: np.ndarray, types: np.ndarray, start_day: np.ndarray) -> None:
        nonlocal next_pid
        ids = np.arange(next_pid, next_pid + rows.size)
        next_pid += rows.size
        pid[rows, types] = ids
        limit = np.where(types == CARD, state.limit[rows], np.nan)  # the card's own limit, not a later one
        products.add(product_id=ids, customer_id=rows + 1, type=types, start=start_day, limit=limit)

    start_month = int(dates.month_of(dates.to_day(config.start)))
    end_day = dates.to_day(config.end)
    end_month = int(dates.month_of(end_day))
    join_month = dates.month_of(attrs["join_day"])
    oracle_month = int(dates.month_of(dates.to_day(dates.add_months(dates.last_month_end(config.end), -12))))
    closes = Ledger()
    ledger = Ledger()
    txns = Ledger()
    oracle = None
    for month in range(start_month, end_month + 1):
        first = int(dates.month_start(month))
        dim = int(dates.days_in_month(month))
        last_day = min(first + dim - 1, end_day)
        joining = np.flatnonzero((join_month <= month) & ~state.active & (state.opened_ever == 0))
        if joining.size:
            pick = first_products(state, joining, rng)
            rows, types = np.nonzero(pick)
            rows = joining[rows]
            open_products(state, rows, types, rng)
            join_day = attrs["join_day"][rows]
            # customers who joined before the window opened these products some time before it
            start_day = np.where(
                join_day < first, join_day + np.floor(rng.random(rows.size) * (first - join_day)), join_day
            ).astype(np.int64)
            age_months = (first - start_day) / 30.4
            for k in (MORT, LOAN):
                sel = types == k
                r = state.rate[rows[sel], k] / 12
                p = state.payment[rows[sel], k]
                left = np.maximum(np.where(k == MORT, 300, 48) - age_months[sel], 1)
                state.balance[rows[sel], k] = np.round(p * (1 - (1 + r) ** -left) / r, 2)
            record_opens(rows, types, start_day)
            state.active[joining] = True
        was_new = np.zeros(n, bool)
        was_new[joining] = True
        active_before = state.active.copy()
        ev = step(state, rng)
        rows = np.flatnonzero(active_before)
        # in the month a customer joins, nothing closes or opens before the day it joined
        floor = np.clip(attrs["join_day"], first, last_day)
        close_day = np.where(ev["churned"], rng.integers(floor, last_day + 1), 0)
        c_rows, c_types = np.nonzero(ev["closed"])
        own_day = rng.integers(floor[c_rows], last_day + 1)
        closes.add(product_id=pid[c_rows, c_types], end=np.where(ev["churned"][c_rows], close_day[c_rows], own_day))
        o_rows, o_types = np.nonzero(ev["opened"])
        open_products(state, o_rows, o_types, rng)
        record_opens(o_rows, o_types, rng.integers(floor[o_rows], last_day + 1))
        if month == oracle_month and config.oracle:
            oracle = expected_value(state, np.random.default_rng(oracle_seq))
        ledger.add(
            customer_id=rows + 1,
            month=np.full(rows.size, month),
            **{f"{family}_balance": balance[rows] for family, balance in family_balances(state).items()},
            **{k: ev[k][rows] for k in ("interest_margin", "fee_income", "cost_to_serve", "credit_loss", "net_margin")},
        )
        counts = ev["counts"] * ~was_new[:, None]
        txns.add(**materialize(counts, ev["steady"], pid, state, first, last_day - first + 1, rng))
        logger.debug("month %s: %d active", dates.month_label(np.array([month]))[0], state.active.sum())
    logger.info("simulated %d customers over %d months", n, end_month - start_month + 1)
    tables = assemble(config, attrs, state, pid, products, closes, ledger, txns, display_seq)
    if oracle is not None:
        as_of = dates.add_months(dates.last_month_end(config.end), -12)
        keep = attrs["join_day"] <= dates.to_day(as_of)
        tables["oracle_clv"] = pa.table({
            "customer_id": pa.array(np.flatnonzero(keep) + 1),
            "as_of": pa.array([as_of] * int(keep.sum()), pa.date32()),
            "expected_clv": pa.array(np.round(oracle[keep], 2)),
        })  # fmt: skip
    return tables


def family_balances(state: State) -> dict[str, np.ndarray]:
    """Month-end balance per product family; a product that closed this month shows zero."""
    bal = state.balance
    return {
        "deposits": np.round(bal[:, SAV] + bal[:, CHK], 2),
        "cards": bal[:, CARD],
        "loans": np.round(bal[:, MORT] + bal[:, LOAN], 2),
        "investments": bal[:, INV],
    }


def expected_value(state: State, rng: np.random.Generator, horizon: int = 12) -> np.ndarray:
    """Mean discounted net margin over the next `horizon` months, from many simulated futures."""
    n = state.active.size
    tiled = state.take(np.tile(np.arange(n), ORACLE_REPLICAS))  # fancy indexing copies
    weights = dates.discount_factors(horizon, 0.10)
    total = np.zeros(tiled.active.size)
    for t in range(horizon):
        total += weights[t] * step(tiled, rng)["net_margin"]
    return total.reshape(ORACLE_REPLICAS, n).mean(axis=0)


def materialize(
    counts: np.ndarray,
    steady: np.ndarray,
    pid: np.ndarray,
    state: State,
    first: int,
    days: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Expand a month's (customer x kind) counts into transaction rows, on products held all month."""
    n, kinds = counts.shape
    flat = np.repeat(np.arange(n * kinds), counts.ravel())
    cust, kind = flat // kinds, flat % kinds
    product = np.zeros((n, kinds), np.int64)
    for k, candidates in enumerate(KIND_PRODUCTS):
        for p in reversed(candidates):  # the first candidate held wins
            product[:, k] = np.where(steady[:, p], pid[:, p], product[:, k])
    income = state.income[cust]
    size = rng.lognormal(0.0, 0.8, flat.size)
    typical = (
        np.array([0.35 / 12, 0.004, 0.01, 0.0025, 0, 0.0009, 0, 0])[kind] * income * np.exp(0.3 * state.wallet[cust])
    )
    amount = np.select(
        [kind == DEP, kind == FEE, kind == MORT_PAY, kind == LOAN_PAY, kind == TRF],
        [
            typical * size,
            -8.0,
            -state.payment[cust, MORT],
            -state.payment[cust, LOAN],
            typical * size * np.where(rng.random(flat.size) < 0.45 - 0.2 * state.drifting[cust], 1, -1),
        ],
        -typical * size,
    )
    amount = np.where(kind == SPEND, -45 * size, amount)
    digital = rng.random(flat.size) < state.digital[cust]
    mobile = rng.random(flat.size) < _sigmoid(-0.06 * (state.age[cust] - 40))
    counter = np.where((kind == WDR) & (rng.random(flat.size) < 0.75), ATM, BRANCH)
    channel = np.where(digital | (kind >= SPEND) | (kind == FEE), np.where(mobile, MOBILE, ONLINE), counter)
    day = first + np.floor(rng.random(flat.size) * days).astype(np.int64)
    order = np.argsort((day - first).astype(np.int16), kind="stable")  # 16-bit keys sort by radix
    return {
        "customer_id": (cust + 1)[order].astype(np.int32),
        "product_id": product[cust, kind][order],
        "day": day[order].astype(np.int32),
        "type": KIND_TYPE[kind][order],
        "amount": np.round(amount, 2)[order],
        "channel": channel[order].astype(np.int8),
    }


def _dictionary(codes: np.ndarray, values: list[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int16)), pa.array(values))


def _dates(days: np.ndarray) -> pa.Array:
    return pa.array(days.astype(np.int32)).cast(pa.date32())


def display_names(n: int, seq: np.random.SeedSequence) -> tuple[np.ndarray, np.ndarray]:
    """Names and emails for display only, sampled from a small pool that one seeded Faker draws."""
    fake = Faker("en_US")
    fake.seed_instance(int(seq.generate_state(1)[0]))
    first = np.array([fake.first_name() for _ in range(400)])
    last = np.array([fake.last_name() for _ in range(600)])
    rng = np.random.default_rng(seq)
    f, s = first[rng.integers(0, first.size, n)], last[rng.integers(0, last.size, n)]
    names = np.char.add(np.char.add(f, " "), s)
    ids = np.arange(1, n + 1).astype(str)
    emails = np.char.add(np.char.add(np.char.lower(np.char.add(np.char.add(f, "."), s)), ids), "@example.com")
    return names, emails


def assemble(
    config: Config,
    attrs: dict[str, np.ndarray],
    state: State,
    pid: np.ndarray,
    products: Ledger,
    closes: Ledger,
    ledger: Ledger,
    txns: Ledger,
    display_seq: np.random.SeedSequence,
) -> dict[str, pa.Table]:
    """The four tables; product statuses and display names draw from their own seeded streams."""
    n = config.customers
    end_day = dates.to_day(config.end)
    faker_seq, status_seq = display_seq.spawn(2)
    names, emails = display_names(n, faker_seq)
    join = attrs["join_day"]
    tenure = dates.months_between(join, end_day)
    customers = pa.table({
        "customer_id": pa.array(np.arange(1, n + 1)),
        "name": pa.array(names),
        "email": pa.array(emails),
        "age": pa.array(attrs["age"].astype(np.int64)),
        "income": pa.array(attrs["income"]),
        "credit_score": pa.array(attrs["credit_score"].astype(np.int64)),
        "region": _dictionary(attrs["region"], [r.value for r in Region]),
        "acquisition_channel": _dictionary(attrs["acquisition"], [c.value for c in AcquisitionChannel]),
        "join_date": _dates(join),
        "tenure_months": pa.array(tenure.astype(np.int64)),
    })  # fmt: skip

    product_id = products.column("product_id")
    owner = products.column("customer_id") - 1
    ptype = products.column("type")
    end = np.full(product_id.size, -1, np.int64)
    end[closes.column("product_id") - 1] = closes.column("end")  # product ids are 1..P in order
    is_open = end < 0
    current = pid[owner, ptype] == product_id
    balance = np.where(is_open & current, state.balance[owner, ptype], 0.0)
    limit = products.column("limit")
    rate = np.where(ptype == INV, np.nan, state.rate[owner, ptype])  # an investment has no rate
    rng = np.random.default_rng(status_seq)
    active, inactive, suspended, closed = range(4)  # the order of ProductStatus
    quiet = is_open & (ptype == SAV) & (balance < 50)
    late = is_open & np.isin(ptype, (CARD, LOAN)) & (rng.random(ptype.size) < 0.02 * np.exp(state.risk[owner]))
    status = np.select([~is_open, late, quiet], [closed, suspended, inactive], active)
    products_table = pa.table({
        "product_id": pa.array(product_id),
        "customer_id": pa.array(owner + 1),
        "product_type": _dictionary(ptype, PRODUCT_TYPES),
        "start_date": _dates(products.column("start")),
        "end_date": pa.array(end.astype(np.int32), mask=is_open).cast(pa.date32()),
        "balance": pa.array(np.round(balance, 2)),
        "credit_limit": pa.array(limit, from_pandas=True),
        "interest_rate": pa.array(np.round(rate * 100, 2), from_pandas=True),
        "status": _dictionary(status, [s.value for s in ProductStatus]),
    })  # fmt: skip

    day = txns.column("day")
    transactions = pa.table({
        "transaction_id": pa.array(np.arange(1, day.size + 1)),
        "customer_id": pa.array(txns.column("customer_id")),
        "product_id": pa.array(txns.column("product_id")),
        "transaction_date": _dates(day),
        "transaction_type": _dictionary(txns.column("type"), [t.value for t in TransactionType]),
        "amount": pa.array(txns.column("amount")),
        "channel": _dictionary(txns.column("channel"), [c.value for c in Channel]),
    })  # fmt: skip

    months = ledger.column("month")
    first_month = int(months.min())
    labels = dates.month_label(np.arange(first_month, int(months.max()) + 1))
    metrics = {
        "customer_id": pa.array(ledger.column("customer_id")),
        "month": _dictionary(months - first_month, list(labels)),
    }
    for name in ledger.chunks:
        if name not in metrics and name != "month":
            metrics[name] = pa.array(ledger.column(name))
    return {
        "customers": customers,
        "products": products_table,
        "transactions": transactions,
        "customer_metrics": pa.table(metrics),
    }


def write_tables(tables: dict[str, pa.Table], out: Path) -> list[Path]:
    """Write every table beside the others, each under a temporary name first, then rename them all."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, table in tables.items():
        path = out / f"{name}.csv"
        write_csv(table, path)
        paths.append(path)
        logger.info("wrote %s rows to %s", f"{table.num_rows:,}", path)
    return paths


def check_writable(out: Path) -> None:
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise OptionError(f"--out {out}: folder is not writable")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(prog="data_gen.py", description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=Config.customers, help="number of customers (default 10000)")
    parser.add_argument("--start-date", type=parse_date, default=Config.start, help="first day, YYYY-MM-DD")
    parser.add_argument("--end-date", type=parse_date, default=Config.end, help="last day, YYYY-MM-DD")
    parser.add_argument("--seed", type=int, default=Config.seed, help="random seed (default 42)")
    parser.add_argument("--out", type=Path, default=Path("data"), help="output folder (default data)")
    parser.add_argument("--write-oracle", action="store_true", help="also write oracle_clv.csv (for evaluation)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        args = parse_args(argv)
        if args.customers < 1:
            raise OptionError(f"--customers {args.customers}: must be at least 1")
        if args.end_date < args.start_date + dt.timedelta(days=60):
            raise OptionError(f"--end-date {args.end_date}: must be two months or more after --start-date")
        if args.write_oracle and args.end_date < dates.shift_months(args.start_date, 13):
            raise OptionError("--write-oracle: needs 13 months or more between --start-date and --end-date")
        check_writable(args.out)
    except OptionError as exc:
        print(f"data_gen.py: error: {exc}", file=sys.stderr)
        return 2
    config = Config(args.customers, args.start_date, args.end_date, args.seed, args.write_oracle)
    started = time.perf_counter()
    tables = simulate(config)
    paths = write_tables(tables, args.out)
    rows = ", ".join(f"{p.name} {tables[p.stem].num_rows:,}" for p in paths)
    logger.info("done in %.1f s: %s", time.perf_counter() - started, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
