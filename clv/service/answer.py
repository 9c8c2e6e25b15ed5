"""What a request does: check its dates, turn its customers into feature rows through the one feature path, ask
the prediction core, and answer typed responses. Single requests that arrive together are scored in one call
(MicroBatcher)."""

from __future__ import annotations

import asyncio
import datetime as dt

import numpy as np
from pydantic import TypeAdapter

from clv.common import dates
from clv.data.bank import bank_from_requests
from clv.model.artifacts import LoadedModel
from clv.model.features import FEATURE_NAMES, feature_matrix
from clv.model.labels import former
from clv.model.predictor import NoCurve, Predictions
from clv.service.schemas.requests import CustomerIn
from clv.service.schemas.responses import PredictionOut
from clv.service.telemetry import RecentRows

OFF_LOOP_ITEMS = 500  # a request with more products, transactions and ledger months runs in a thread
TOP = 5
GONE_REASON = "no open product at as_of: the customer has already left"
NO_CHURN_MODEL = "the model serving was trained without a churn probability; train a new one"
BATCH_ROWS = 64  # single-customer requests scored in one call, at most
ANSWERS = TypeAdapter(list[PredictionOut])  # a call's answers, validated in one pass
HOPS = 1  # turns of the event loop a call waits for more requests: gathers about all of 8 concurrent ones


class InputError(Exception):
    """A request that validated but contradicts itself (a date after as_of)."""

    def __init__(self, errors: list[dict]) -> None:
        self.errors = errors


def _late_dates(customer: CustomerIn, as_of: dt.date, prefix: tuple) -> list[dict]:
    """Every date after as_of, named by its field."""
    late: list[tuple] = []
    groups = (("products", "start_date"), ("products", "end_date"), ("transactions", "transaction_date"))
    for group, name in groups:
        late += [
            (group, i, name)
            for i, item in enumerate(getattr(customer, group))
            if (getattr(item, name) or as_of) > as_of
        ]
    if customer.join_date is not None and customer.join_date > as_of:
        late.append(("join_date",))
    month_of_as_of = f"{as_of.year:04d}-{as_of.month:02d}"  # "YYYY-MM" strings order as the months do
    late += [("ledger", i, "month") for i, row in enumerate(customer.ledger) if row.month > month_of_as_of]
    return [{"loc": [*prefix, *where], "msg": f"is after as_of {as_of}", "type": "after_as_of"} for where in late]


def _any_late(customer: CustomerIn, as_of: dt.date) -> bool:
    """Whether any date lies after as_of: one pass that builds nothing, for the usual request, which has none."""
    for product in customer.products:
        if product.start_date > as_of or (product.end_date is not None and product.end_date > as_of):
            return True
    for transaction in customer.transactions:
        if transaction.transaction_date > as_of:
            return True
    if customer.join_date is not None and customer.join_date > as_of:
        return True
    if not customer.ledger:
        return False
    month_of_as_of = f"{as_of.year:04d}-{as_of.month:02d}"
    return any(row.month > month_of_as_of for row in customer.ledger)


def check_dates(loaded: LoadedModel, customers: list[CustomerIn], batch: bool = False) -> None:
    """InputError naming every date after its customer's as_of."""
    errors = []
    for i, customer in enumerate(customers):
        as_of = customer.as_of or loaded.default_as_of
        if _any_late(customer, as_of):
            errors += _late_dates(customer, as_of, ("body", "customers", i) if batch else ("body",))
    if errors:
        raise InputError(errors)


def feature_rows(customers: list[CustomerIn], as_ofs: list[dt.date]) -> tuple[np.ndarray, np.ndarray]:
    """The feature rows (FEATURE_NAMES' columns) of request customers and who of them had closed every
    product, in their order.

    Customers of one as-of date, with a ledger or without, share one Bank (a Bank with a ledger table
    reads a customer without ledger rows as months of zero margin, not as unknown)."""
    groups: dict[tuple[dt.date, bool], list[int]] = {}
    for i, customer in enumerate(customers):
        groups.setdefault((as_ofs[i], bool(customer.ledger)), []).append(i)
    X = np.empty((len(customers), len(FEATURE_NAMES)))
    gone = np.empty(len(customers), bool)
    for (as_of, _), rows in groups.items():
        day = dates.to_day(as_of)
        bank = bank_from_requests([customers[i] for i in rows], day)
        X[rows] = feature_matrix(bank, day)
        gone[rows] = former(bank, day)
    return X, gone


def score(
    loaded: LoadedModel, customers: list[CustomerIn], recent: RecentRows | None = None, curve: list[bool] | None = None
) -> list[PredictionOut]:
    """Answers for request customers, through the same feature path and prediction core as batch scoring; their
    rows join the `recent` window the drift is measured on. `curve` says whose answer carries the monthly curve."""
    curve = curve or [False] * len(customers)
    if any(curve) and not loaded.predictor.has_curve:
        raise NoCurve(f"model {loaded.version} was trained before horizons and has no curve; train a new one")
    as_ofs = [customer.as_of or loaded.default_as_of for customer in customers]
    X, gone = feature_rows(customers, as_ofs)
    out = loaded.predictor.predict(X, gone, curve=any(curve), check_input=False)
    if recent is not None:
        recent.add(X, out.value, out.churn)
    return answers(loaded, customers, as_ofs, X, out, curve)


def answers(
    loaded: LoadedModel,
    customers: list[CustomerIn],
    as_ofs: list[dt.date],
    X: np.ndarray,
    out: Predictions,
    curve: list[bool],
) -> list[PredictionOut]:
    """The prediction core's arrays as typed responses: the numbers turned into Python's in a few calls (the arrays
    rounded alike stacked and rounded together), each answer a dict, and the call's answers validated in one pass
    of pydantic-core rather than ten models built one by one an answer."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    meta = loaded.metadata
    base = round(loaded.model.expected_value_, 2)
    months = list(out.horizons)
    cents = np.vstack([out.value, out.low, out.high, *(x for band in out.horizons.values() for x in band)])
    value, low, high, *banded = cents.round(2).tolist()
    bands = [(m, *banded[3 * k : 3 * k + 3]) for k, m in enumerate(months)]
    confidence, churn = np.vstack([out.confidence, out.churn]).round(4).tolist()
    no_churn = None if loaded.model.churn_calibration_ is not None else NO_CHURN_MODEL
    drivers = _drivers(X, out)
    curves = _curves(out) if out.curve is not None else None
    gone = out.gone.tolist()
    level, horizon_months, churn_months, version = (
        meta.interval_level,
        meta.horizon_months,
        meta.churn_months,
        loaded.version,
    )
    results = []
    for i, customer in enumerate(customers):
        answer = {
            "customer_id": customer.customer_id,
            "predicted_clv": value[i],
            "clv_interval": {"low": low[i], "high": high[i], "level": level},
            "confidence_score": confidence[i],
            "horizon_months": horizon_months,
            "churn_probability": None if churn[i] != churn[i] else churn[i],  # NaN: none (churn_reason says why)
            "churn_months": churn_months,
            "churn_reason": GONE_REASON if gone[i] else no_churn,
            "horizons": [{"months": m, "clv": clv[i], "low": lo[i], "high": hi[i]} for m, clv, lo, hi in bands],
            "as_of": as_ofs[i],
            "drivers": [] if gone[i] else drivers[i],
            "drivers_base": base,
            "model_version": version,
            "prediction_timestamp": now,
        }
        if curve[i]:  # left out unless asked: an unset field stays out of the JSON
            answer["curve"] = curves[i]
        results.append(answer)
    return ANSWERS.validate_python(results)


def _drivers(X: np.ndarray, out: Predictions) -> list[list[dict]]:
    """Each row's TOP features by the size of their contribution, with the customer's value of each."""
    order, contributions = out.drivers(TOP)
    values = np.take_along_axis(X, order, axis=1).tolist()
    contributions = contributions.round(2).tolist()
    return [
        [
            {"feature": FEATURE_NAMES[j], "value": None if value != value else value, "contribution": contribution}
            for j, value, contribution in zip(row, values[i], contributions[i], strict=True)
        ]
        for i, row in enumerate(order.tolist())
    ]


def _curves(out: Predictions) -> list[list[dict]]:
    """Each row's monthly curve."""
    curve = out.curve
    months = curve.month.tolist()
    survival = curve.survival.round(6).tolist()
    margin, cumulative = (values.round(2).tolist() for values in (curve.expected_margin, curve.cumulative_clv))
    return [
        [
            {"month": m, "survival": s, "expected_margin": e, "cumulative_clv": c}
            for m, s, e, c in zip(months, survival[k], margin[k], cumulative[k], strict=True)
        ]
        for k in range(len(survival))
    ]


def predict(
    loaded: LoadedModel,
    customers: list[CustomerIn],
    batch: bool = False,
    recent: RecentRows | None = None,
    curve: bool = False,
) -> list[PredictionOut]:
    check_dates(loaded, customers, batch)
    return score(loaded, customers, recent, [curve] * len(customers))


Waiting = tuple[LoadedModel, CustomerIn, bool, asyncio.Future]


class MicroBatcher:
    """Scores the small single-customer requests that arrive together in one call. A one-row feature build
    and model call cost about 0.45 ms, almost all of it the fixed cost of some hundred numpy calls; eight
    rows together cost little more than one. The call waits HOPS turns of the event loop, so that requests
    whose bytes arrive meanwhile join it. `calls` counts the scoring calls made."""

    def __init__(self, recent: RecentRows | None = None) -> None:
        self.waiting: list[Waiting] = []
        self.calls = 0
        self.recent = recent

    async def score(self, loaded: LoadedModel, customer: CustomerIn, curve: bool = False) -> PredictionOut:
        loop = asyncio.get_running_loop()
        if not self.waiting:
            loop.call_soon(self._flush, HOPS)
        future = loop.create_future()
        self.waiting.append((loaded, customer, curve, future))
        return await future

    def _flush(self, hops: int) -> None:
        if hops > 0 and len(self.waiting) < BATCH_ROWS:
            asyncio.get_running_loop().call_soon(self._flush, hops - 1)
            return
        waiting, self.waiting = self.waiting[:BATCH_ROWS], self.waiting[BATCH_ROWS:]
        if self.waiting:
            asyncio.get_running_loop().call_soon(self._flush, 0)
        # requests in flight finish on the model they started with: one call per model among the waiting
        by_model: dict[int, list[Waiting]] = {}
        for item in waiting:
            by_model.setdefault(id(item[0]), []).append(item)
        for group in by_model.values():
            self._score_group(group)

    def _score_group(self, group: list[Waiting]) -> None:
        self.calls += 1
        try:
            customers, curves = [customer for _, customer, _, _ in group], [curve for _, _, curve, _ in group]
            results = score(group[0][0], customers, self.recent, curves)
        except Exception:  # score each alone, so that one request's failure stays its own
            for loaded, customer, curve, future in group:
                try:
                    _settle(future, result=score(loaded, [customer], self.recent, [curve])[0])
                except Exception as exc:
                    _settle(future, error=exc)
            return
        for (_, _, _, future), result in zip(group, results, strict=True):
            _settle(future, result=result)


def _settle(future: asyncio.Future, result: object = None, error: Exception | None = None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


async def predict_single(
    batcher: MicroBatcher, loaded: LoadedModel, customer: CustomerIn, curve: bool = False
) -> PredictionOut:
    check_dates(loaded, [customer])
    size = len(customer.products) + len(customer.transactions) + len(customer.ledger)
    if size > OFF_LOOP_ITEMS:  # keep the event loop free for /health while a large request computes
        return (await asyncio.to_thread(score, loaded, [customer], batcher.recent, [curve]))[0]
    return await batcher.score(loaded, customer, curve)
