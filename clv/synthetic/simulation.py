"""The synthetic bank's month: customers with hidden traits, their products, and one month of their life.

Each customer carries hidden traits (engagement, wallet share, price sensitivity, churn propensity,
credit risk) that are correlated with what the bank sees but not fixed by it, and that drift. `step`
advances every active customer by one calendar month over whole columns: churn, product closes and
opens, balances, the month's transaction counts and the month's profit. clv.synthetic.generator turns the months
into tables.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields

import numpy as np

from clv.common import dates
from clv.data.defaults import CHURN_MONTHS, DISCOUNT_RATE, HORIZON_MONTHS, HORIZONS, JUDGED_HORIZON
from clv.data.schema import AcquisitionChannel, Region

SAV, CHK, CARD, MORT, INV, LOAN = range(6)  # product slots, in the order of clv.data.schema.ProductType
FTP_RATE = 0.03  # what the treasury pays for deposits and charges for funding loans
MAX_PRODUCTS_PER_CUSTOMER = 5
TERM_MONTHS = {MORT: 300, LOAN: 48}  # a loan's term: its payment pays it off in this many months
ORACLE_REPLICAS = 32
ORACLE_HORIZONS = tuple(sorted({HORIZON_MONTHS, *HORIZONS, JUDGED_HORIZON}))  # the oracle's expected values
# Transaction kinds of the simulation; both loan kinds are written as "Loan Payment".
KINDS = 8
DEP, WDR, TRF, BILL, FEE, SPEND, MORT_PAY, LOAN_PAY = range(KINDS)


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

    @classmethod
    def of(cls, attrs: dict[str, np.ndarray]) -> State:
        """Customers before they join: traits drawn, nothing held."""
        n = attrs["age"].size
        traits = {name: attrs[name] for name in ("engagement", "wallet", "price", "churn", "risk", "income", "digital")}
        return cls(
            **traits,
            drifting=np.zeros(n, bool),
            age=attrs["age"].copy(),
            active=np.zeros(n, bool),
            held=np.zeros((n, 6), bool),
            balance=np.zeros((n, 6)),
            payment=np.zeros((n, 6)),
            rate=np.zeros((n, 6)),
            limit=np.zeros(n),
            opened_ever=np.zeros(n, np.int64),
        )

    def take(self, index: np.ndarray) -> State:
        return State(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# Per customer across the product slots (or the transaction kinds) of an (n, k) array, column by column: numpy
# reduces along a row of six some seven times slower than it combines six columns, and every month does it a
# few times over the whole block. Whole numbers, so the order of adding cannot change a result.


def any_set(cells: np.ndarray) -> np.ndarray:
    """Whether any column of an (n, k) bool array is set, per row."""
    out = np.zeros(cells.shape[0], bool)
    for k in range(cells.shape[1]):
        out |= cells[:, k]
    return out


def set_cells(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.nonzero of an (n, k) bool array that is mostly False (a month's closes or opens): only the rows with
    any set are searched, in the same order."""
    rows = np.flatnonzero(any_set(cells))
    within, columns = np.nonzero(cells[rows])
    return rows[within], columns


def row_counts(values: np.ndarray) -> np.ndarray:
    """The sum of each row of bools or whole numbers, as int64."""
    out = values[:, 0].astype(np.int64)
    for k in range(1, values.shape[1]):
        out += values[:, k]
    return out


def running_counts(cells: np.ndarray) -> np.ndarray:
    """How many columns of an (n, k) bool array are set up to and including each one, per row (np.cumsum along
    the rows)."""
    out = np.empty(cells.shape, np.int64)
    out[:, 0] = cells[:, 0]
    for k in range(1, cells.shape[1]):
        np.add(out[:, k - 1], cells[:, k], out=out[:, k])
    return out


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
    join = np.where(before, rng.integers(first_day, start_day, n), rng.integers(start_day, end_day - 30, n))
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
        "digital": sigmoid(1.0 + 0.8 * z[3] - 0.04 * (age - 44) + 0.8 * online),
    }


def open_products(state: State, rows: np.ndarray, types: np.ndarray, rng: np.random.Generator) -> None:
    """Open product `types[k]` for customer `rows[k]`: set its balance, rate, instalment and limit."""
    if rows.size == 0:
        return
    income, wallet, risk = state.income[rows], np.clip(state.wallet[rows], -3, 3), state.risk[rows]
    noise = rng.lognormal(0.0, 0.5, rows.size)
    kinds = [types == SAV, types == CHK, types == CARD, types == MORT, types == INV, types == LOAN]
    balance = np.select(
        kinds,
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
        kinds,
        [
            0.012 + 0.008 * sigmoid(2 * state.price[rows]),
            np.full(rows.size, 0.001),
            0.17 + 0.04 * sigmoid(risk),
            0.042 + 0.01 * sigmoid(risk),
            np.zeros(rows.size),
            0.07 + 0.07 * sigmoid(risk),
        ],
    )
    term = np.where(types == MORT, TERM_MONTHS[MORT], TERM_MONTHS[LOAN])
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
    p = np.column_stack(
        [
            sigmoid(-0.3 + 0.5 * w),
            np.full(n, 0.85),
            sigmoid(-0.6 + 0.4 * e - 0.3 * state.risk[rows]),
            sigmoid(-1.6 + 0.5 * w) * (age < 65) * (age > 24),
            sigmoid(-2.2 + 1.0 * w + 0.02 * (age - 40)),
            sigmoid(-2.3 + 0.4 * state.risk[rows]),
        ]
    )
    pick = rng.random((n, 6)) < p
    pick[~any_set(pick), CHK] = True
    return pick & (running_counts(pick) <= MAX_PRODUCTS_PER_CUSTOMER)


def _churn(state: State, act: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hidden traits drift (a few customers start drifting away, which shows only slowly); who leaves."""
    n = act.size
    state.drifting |= act & (rng.random(n) < 0.006)
    state.engagement += 0.1 * rng.standard_normal(n) - 0.01 * state.engagement - 0.12 * state.drifting
    state.wallet += 0.07 * rng.standard_normal(n) - 0.005 * state.wallet - 0.1 * state.drifting
    held = state.held
    logit = -5.1 + 0.6 * state.churn - 0.35 * state.engagement + 1.3 * state.drifting + 0.5 * (row_counts(held) == 1)
    logit -= 0.5 * held[:, MORT] + 0.3 * (held[:, CHK] & (state.digital > 0.6))
    return act & (rng.random(n) < sigmoid(logit))


def _closes_and_opens(
    state: State, act: np.ndarray, churned: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Products closed and opened this month; a customer whose last product closes has churned."""
    n, held = act.size, state.held
    # price-sensitive customers take their mortgage and investments to a cheaper bank
    shop = sigmoid(2 * state.price - 1)
    close_p = np.column_stack(
        [
            np.full(n, 0.003),
            np.full(n, 0.0015),
            np.full(n, 0.004),
            0.0005 + 0.008 * shop,
            0.001 + 0.008 * shop * sigmoid(-state.wallet),
            np.full(n, 0.004),
        ]
    )
    closed = held & act[:, None] & (rng.random((n, 6)) < close_p)
    paid_off = held & (state.payment > 0) & (state.balance <= state.payment * 1.01)
    closed |= paid_off & act[:, None]
    closed[churned] = held[churned]
    churned = churned | (act & any_set(held) & ~any_set(held & ~closed))

    e, w = state.engagement, np.clip(state.wallet, -3, 3)
    room = act & ~churned & (state.opened_ever < MAX_PRODUCTS_PER_CUSTOMER)
    open_p = 0.004 * np.exp(0.5 * e)[:, None] * np.array([1.0, 0.6, 1.0, 0.25, 0.5, 0.4])
    open_p[:, MORT] *= (state.age < 62) * np.exp(0.4 * w)
    open_p[:, INV] *= np.exp(0.8 * w)
    opened = ~held & room[:, None] & (rng.random((n, 6)) < open_p)
    opened &= running_counts(opened) <= (MAX_PRODUCTS_PER_CUSTOMER - state.opened_ever)[:, None]
    return closed, opened, churned


def _move_balances(state: State, rng: np.random.Generator) -> np.ndarray:
    """Deposits drift toward what the wallet share would hold, loans amortise, cards follow risk.
    Returns the month's card utilisation."""
    n, bal = state.active.size, state.balance
    w = np.clip(state.wallet, -3, 3)
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
    utilisation = sigmoid(-1.2 + 0.9 * state.risk + 0.4 * rng.standard_normal(n))
    bal[:, CARD] = state.limit * utilisation
    bal *= state.held
    bal[:] = np.round(bal, 2)
    return utilisation


def _activity(state: State, act: np.ndarray, steady: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """This month's transaction counts per (customer, kind), on products held all month."""
    g = np.exp(0.35 * np.clip(state.engagement, -3, 3)) * act
    has_dep = steady[:, CHK] | steady[:, SAV]
    fee = steady[:, CHK] & (state.balance[:, CHK] < 1_500)
    counts = np.zeros((act.size, KINDS), np.int64)  # filled column by column: stacking them is slower
    drawn = (
        (DEP, 1.1, has_dep),
        (WDR, 0.9, has_dep),
        (TRF, 0.5, has_dep | steady[:, INV]),
        (BILL, 1.3, steady[:, CHK]),
        (SPEND, 3.5, steady[:, CARD]),
    )
    for kind, rate, on in drawn:
        counts[:, kind] = rng.poisson(rate * g * on)
    counts[:, FEE], counts[:, MORT_PAY], counts[:, LOAN_PAY] = fee, steady[:, MORT], steady[:, LOAN]
    counts *= act[:, None]
    return counts


def _profit(state: State, act: np.ndarray, counts: np.ndarray, utilisation: np.ndarray) -> dict[str, np.ndarray]:
    """The month's ledger: interest margin + fees - cost to serve - expected credit loss."""
    bal = state.balance
    spread = np.zeros_like(bal)
    spread[:, [SAV, CHK]] = FTP_RATE - state.rate[:, [SAV, CHK]]
    spread[:, CARD] = (state.rate[:, CARD] - FTP_RATE) * utilisation
    spread[:, [MORT, LOAN]] = state.rate[:, [MORT, LOAN]] - FTP_RATE - 0.005
    interest = (spread * bal).sum(axis=1) / 12
    fees = 8.0 * counts[:, FEE] + 0.015 * 45 * counts[:, SPEND] + 0.008 / 12 * bal[:, INV] + 0.4 * counts[:, TRF]
    cost = 3.0 * row_counts(state.held) + row_counts(counts) * (0.12 + 3.0 * (1 - state.digital))
    pd_annual = sigmoid(-4.0 + 1.1 * state.risk)
    exposure = 0.85 * bal[:, CARD] + 0.6 * bal[:, LOAN] + 0.12 * bal[:, MORT]
    on_books = act.astype(np.float64)
    parts = {
        "interest_margin": np.round(interest * on_books, 2),
        "fee_income": np.round(fees * on_books, 2),
        "cost_to_serve": np.round(cost * on_books, 2),
        "credit_loss": np.round(pd_annual / 12 * exposure * on_books, 2),
    }
    parts["net_margin"] = np.round(
        parts["interest_margin"] + parts["fee_income"] - parts["cost_to_serve"] - parts["credit_loss"], 2
    )
    return parts


def step(state: State, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Advance one calendar month for the active customers; return its events, counts and profit."""
    act = state.active.copy()
    churned = _churn(state, act, rng)
    closed, opened, churned = _closes_and_opens(state, act, churned, rng)
    utilisation = _move_balances(state, rng)
    steady = state.held & ~closed
    counts = _activity(state, act, steady, rng)
    parts = _profit(state, act, counts, utilisation)
    # closing takes effect after the month's profit is booked
    state.held &= ~closed
    state.balance[closed] = 0.0
    state.active &= ~churned
    return {"churned": churned, "closed": closed, "opened": opened, "steady": steady, "counts": counts, **parts}


def family_balances(state: State) -> dict[str, np.ndarray]:
    """Month-end balance per product family; a product that closed this month shows zero."""
    bal = state.balance
    return {
        "deposits": np.round(bal[:, SAV] + bal[:, CHK], 2),
        "cards": bal[:, CARD],
        "loans": np.round(bal[:, MORT] + bal[:, LOAN], 2),
        "investments": bal[:, INV],
    }


def expected_value(
    state: State,
    rng: np.random.Generator,
    horizons: tuple[int, ...] = ORACLE_HORIZONS,
    churn_months: int = CHURN_MONTHS,
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Mean discounted net margin over the next months, at each of `horizons`, and the probability of leaving
    (closing the last product) within `churn_months` of a customer active now (NaN for the others), from many
    simulated futures."""
    n = state.active.size
    tiled = state.take(np.tile(np.arange(n), ORACLE_REPLICAS))  # fancy indexing copies
    weights = dates.discount_factors(max(horizons), DISCOUNT_RATE)
    total = np.zeros(tiled.active.size)
    values, left = {}, np.zeros(tiled.active.size, bool)
    for t in range(max(*horizons, churn_months)):
        margin = step(tiled, rng)["net_margin"]
        if t < weights.size:
            total += weights[t] * margin
        if t + 1 in horizons:
            values[t + 1] = total.reshape(ORACLE_REPLICAS, n).mean(axis=0)
        if t == churn_months - 1:
            left = ~tiled.active
    churn = left.reshape(ORACLE_REPLICAS, n).mean(axis=0)
    return values, np.where(state.active, churn, np.nan)
