"""One block of the synthetic bank simulated month by month (clv.synthetic.simulation): the settings of a
bank, its blocks of customers, and the rows a block collects, a month's transaction rows included."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from clv.common import dates
from clv.data.defaults import HORIZON_MONTHS
from clv.data.schema import LEDGER_PARTS, TransactionType
from clv.synthetic.simulation import (
    CARD,
    CHK,
    DEP,
    FEE,
    INV,
    LOAN,
    LOAN_PAY,
    MORT,
    MORT_PAY,
    SAV,
    SPEND,
    TERM_MONTHS,
    TRF,
    WDR,
    State,
    draw_customers,
    expected_value,
    family_balances,
    first_products,
    open_products,
    set_cells,
    sigmoid,
    step,
)

KIND_TYPE = np.array(
    [
        list(TransactionType).index(t)
        for t in (
            TransactionType.DEPOSIT,
            TransactionType.WITHDRAWAL,
            TransactionType.TRANSFER,
            TransactionType.BILL_PAYMENT,
            TransactionType.FEE,
            TransactionType.CARD_PURCHASE,
            TransactionType.LOAN_PAYMENT,
            TransactionType.LOAN_PAYMENT,
        )
    ],
    dtype=np.int8,
)
# A kind's typical amount, as a share of the customer's yearly income (scaled by the wallet and a draw); fees, card
# spend and loan payments have amounts of their own (materialize).
TYPICAL = np.array([0.35 / 12, 0.004, 0.01, 0.0025, 0, 0.0009, 0, 0])
# The product each kind moves money on: first held product of the list.
KIND_PRODUCTS = ((CHK, SAV), (CHK, SAV), (CHK, SAV, INV), (CHK,), (CHK, SAV), (CARD,), (MORT,), (LOAN,))
ONLINE, MOBILE, BRANCH, ATM = range(4)


def materialize(
    counts: np.ndarray,
    steady: np.ndarray,
    pid: np.ndarray,
    state: State,
    first: int,
    days: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Expand a month's (customer x kind) counts into transaction rows, on products held all month. The wallet's
    factor and the odds of mobile are worked out once a customer, the product once a customer and kind. Each row
    draws its size, its transfer's direction, digital, mobile, counter and day, a draw of every row each, in this
    order: drawing fewer, or in another order, changes every bank a seed names."""
    n, kinds = counts.shape
    flat = np.repeat(np.arange(n * kinds), counts.ravel())
    cust, kind = np.divmod(flat, kinds)
    held, ids = np.ascontiguousarray(steady.T), np.ascontiguousarray(pid.T)  # slot by slot, each column whole
    product = np.zeros((kinds, n), np.int64)
    for k, candidates in enumerate(KIND_PRODUCTS):
        for p in reversed(candidates):  # the first candidate held wins
            product[k] = np.where(held[p], ids[p], product[k])
    size = rng.lognormal(0.0, 0.8, flat.size)
    typical = TYPICAL[kind] * state.income[cust] * np.exp(0.3 * state.wallet)[cust] * size
    amount = np.where(kind == DEP, typical, -typical)  # withdrawals and bills go out
    transfer = kind == TRF
    # every row draws, a transfer or not, so that the draws after it fall where they always have
    inbound = rng.random(flat.size)[transfer] < 0.45 - 0.2 * state.drifting[cust[transfer]]
    amount[transfer] = typical[transfer] * np.where(inbound, 1, -1)
    amount[kind == FEE] = -8.0
    for paying, slot in ((MORT_PAY, MORT), (LOAN_PAY, LOAN)):
        paid = kind == paying
        amount[paid] = -state.payment[cust[paid], slot]
    spend = kind == SPEND
    amount[spend] = -45 * size[spend]
    digital = rng.random(flat.size) < state.digital[cust]
    mobile = rng.random(flat.size) < sigmoid(-0.06 * (state.age - 40))[cust]
    counter = np.where((kind == WDR) & (rng.random(flat.size) < 0.75), ATM, BRANCH)
    channel = np.where(digital | (kind >= SPEND) | (kind == FEE), np.where(mobile, MOBILE, ONLINE), counter)
    offset = np.floor(rng.random(flat.size) * days).astype(np.int16)
    order = np.argsort(offset, kind="stable")  # 16-bit keys sort by radix
    owner, owned = cust[order], kind[order]
    return {
        "owner": owner.astype(np.int32),
        "product_id": product.ravel()[owned * n + owner],  # one index, not a pair: numpy takes it faster
        "day": first + offset[order].astype(np.int32),
        "type": KIND_TYPE[owned],
        "amount": np.round(amount, 2)[order],
        "channel": channel[order].astype(np.int8),
    }


@dataclass(frozen=True)
class Config:
    customers: int = 10_000
    start: dt.date = dt.date(2020, 1, 1)
    end: dt.date = dt.date(2024, 12, 31)
    seed: int = 42
    oracle: bool = False

    def describe(self) -> dict:
        """The settings, as written beside a synthetic bank so that a model trained on it can say so."""
        return {
            "generator": "clv.synthetic.generator",
            "customers": self.customers,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "seed": self.seed,
        }

    @property
    def oracle_as_of(self) -> dt.date:
        """The as-of date of oracle_clv: the last month end minus the horizon (the default training cutoff)."""
        return dates.add_months(dates.last_month_end(self.end), -HORIZON_MONTHS)


class Columns:
    """Collects per-month columns and hands each out as one array."""

    def __init__(self) -> None:
        self.chunks: dict[str, list[np.ndarray]] = {}

    def add(self, **columns: np.ndarray) -> None:
        for name, values in columns.items():
            self.chunks.setdefault(name, []).append(values)

    def column(self, name: str) -> np.ndarray:
        return np.concatenate(self.chunks[name])


@dataclass(frozen=True)
class Block:
    """A set of customers simulated together with their own random streams. Product and transaction ids
    interleave across blocks (the k-th id of block b of B is k * B + b + 1), so they are unique across the
    bank whatever the number of blocks, and 1, 2, 3, ... when there is one block."""

    customer_id: np.ndarray
    seed: np.random.SeedSequence
    index: int = 0
    count: int = 1

    def ids(self, local: np.ndarray) -> np.ndarray:
        return np.asarray(local, np.int64) * self.count + self.index + 1


class Run:
    """One block simulated month by month: its state, the ids of its products, and the rows it collects."""

    def __init__(self, config: Config, block: Block) -> None:
        main_seq, display_seq, self.oracle_seq = block.seed.spawn(3)
        self.faker_seq, self.status_seq = display_seq.spawn(2)
        self.rng = np.random.default_rng(main_seq)
        self.config, self.block = config, block
        self.n = n = block.customer_id.size
        self.attrs = draw_customers(n, config.start, config.end, self.rng)
        self.state = State.of(self.attrs)
        self.join_month = dates.month_of(self.attrs["join_day"])
        self.pid = np.zeros((n, 6), np.int64)  # the id of each customer's current product in each slot
        self.products, self.closes, self.ledger, self.txns = Columns(), Columns(), Columns(), Columns()
        self.opened = 0
        self.oracle: dict[int, np.ndarray] | None = None  # expected value by horizon
        self.oracle_churn: np.ndarray | None = None

    def record_opens(self, rows: np.ndarray, types: np.ndarray, start_day: np.ndarray) -> None:
        local = np.arange(self.opened, self.opened + rows.size)
        self.opened += rows.size
        self.pid[rows, types] = self.block.ids(local)
        limit = np.where(types == CARD, self.state.limit[rows], np.nan)  # the card's own limit, not a later one
        self.products.add(local=local, owner=rows, type=types, start=start_day, limit=limit)

    def join(self, month: int, first: int) -> np.ndarray:
        """Customers whose join month has come open their first products; returns their rows."""
        state, rng = self.state, self.rng
        joining = np.flatnonzero((self.join_month <= month) & ~state.active & (state.opened_ever == 0))
        if not joining.size:
            return joining
        rows, types = np.nonzero(first_products(state, joining, rng))
        rows = joining[rows]
        open_products(state, rows, types, rng)
        join_day = self.attrs["join_day"][rows]
        # customers who joined before the window opened these products some time before it
        start_day = np.where(
            join_day < first, join_day + np.floor(rng.random(rows.size) * (first - join_day)), join_day
        ).astype(np.int64)
        age_months = (first - start_day) / 30.4
        for k in (MORT, LOAN):
            sel = types == k
            r = state.rate[rows[sel], k] / 12
            p = state.payment[rows[sel], k]
            left = np.maximum(TERM_MONTHS[k] - age_months[sel], 1)
            state.balance[rows[sel], k] = np.round(p * (1 - (1 + r) ** -left) / r, 2)
        self.record_opens(rows, types, start_day)
        state.active[joining] = True
        return joining

    def month(self, month: int, oracle_month: int) -> None:
        """One calendar month: joins, the month's step, its closes and opens, ledger rows and transactions."""
        state, rng, end_day = self.state, self.rng, dates.to_day(self.config.end)
        first = int(dates.month_start(month))
        last_day = min(first + int(dates.days_in_month(month)) - 1, end_day)
        was_new = np.zeros(self.n, bool)
        was_new[self.join(month, first)] = True
        rows = np.flatnonzero(state.active)
        ev = step(state, rng)
        # in the month a customer joins, nothing closes or opens before the day it joined
        floor = np.clip(self.attrs["join_day"], first, last_day)
        close_day = np.where(ev["churned"], rng.integers(floor, last_day + 1), 0)
        c_rows, c_types = set_cells(ev["closed"])
        own_day = rng.integers(floor[c_rows], last_day + 1)
        local = (self.pid[c_rows, c_types] - self.block.index - 1) // self.block.count
        self.closes.add(local=local, end=np.where(ev["churned"][c_rows], close_day[c_rows], own_day))
        o_rows, o_types = set_cells(ev["opened"])
        open_products(state, o_rows, o_types, rng)
        self.record_opens(o_rows, o_types, rng.integers(floor[o_rows], last_day + 1))
        if month == oracle_month and self.config.oracle:
            self.oracle, self.oracle_churn = expected_value(state, np.random.default_rng(self.oracle_seq))
        self.ledger.add(
            owner=rows,
            month=np.full(rows.size, month),
            **{f"{family}_balance": balance[rows] for family, balance in family_balances(state).items()},
            **{k: ev[k][rows] for k in (*LEDGER_PARTS, "net_margin")},
        )
        counts = ev["counts"] * ~was_new[:, None]
        self.txns.add(**materialize(counts, ev["steady"], self.pid, state, first, last_day - first + 1, rng))
