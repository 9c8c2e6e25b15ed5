"""What the service does: the model it serves (followed on disk, swapped whole, a first one made on the
first run), and what a request does: check its dates, build its feature rows, score them; single
requests that arrive together are scored in one call. api.py only routes to these."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import gc
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clv.batch.portfolio import PORTFOLIO, Portfolio
from clv.batch.runs import LATEST as LATEST_RUN
from clv.batch.runs import read_portfolio
from clv.batch.scoring import monthly_curve, predict_rows
from clv.common import dates
from clv.data.bank import bank_from_request, concat_banks
from clv.data.contract import DataContractError, find_table
from clv.data.layout import is_partitioned
from clv.data.schema import CustomerIn
from clv.model import artifacts
from clv.model.artifacts import LATEST, LoadedModel, ModelArtifactError
from clv.model.attributions import driver_order
from clv.model.features import FEATURE_NAMES, feature_matrix
from clv.model.labels import former
from clv.model.monitoring import DriftReport
from clv.service import telemetry
from clv.service.settings import Settings
from clv.service.telemetry import RecentRows

logger = logging.getLogger(__name__)

OFF_LOOP_ITEMS = 500  # a request with more products, transactions and ledger months runs in a thread
TOP = 5
GONE_REASON = "no open product at as_of: the customer has already left"
NO_CHURN_MODEL = "the model serving was trained without a churn probability; train a new one"
TOGETHER = 64  # single-customer requests scored in one call, at most
HOPS = 1  # turns of the event loop a call waits for more requests: gathers about all of 8 concurrent ones


@dataclass
class Service:
    """What the app serves: the loaded model (one object, swapped whole), or why there is none; the recent
    requests' feature rows (none with the metrics off); and the version it refused last (not refused again at
    every look)."""

    settings: Settings
    loaded: LoadedModel | None = None
    reason: str = "starting"
    started: float = field(default_factory=time.monotonic)
    training: asyncio.Task | None = None
    recent: RecentRows | None = field(init=False)
    together: Together = field(init=False)
    refused: Path | None = None
    wake: asyncio.Event | None = None  # set to look for a new model at once (SIGHUP); made in the app's loop
    shown: tuple[tuple, Portfolio] | None = None  # the latest run's portfolio, by its file's name, time and size

    def __post_init__(self) -> None:
        metrics = self.settings.metrics
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # several workers: one window for all of them
        self.recent = RecentRows(self.settings.drift_window, list(FEATURE_NAMES), shared) if metrics else None
        self.together = Together(self.recent)

    def serve(self, loaded: LoadedModel) -> None:
        """Swap in a model at once: a request in flight keeps the one it started with."""
        before = self.loaded
        self.loaded, self.reason = loaded, "ok"
        telemetry.serving(loaded.metadata, None if before is None else before.metadata)
        logger.info("serving model %s", loaded.version)
        settle_heap()

    def drift(self, loaded: LoadedModel) -> DriftReport | None:
        """The recent requests' drift against `loaded`'s training rows; None with the metrics off, or too few."""
        if self.recent is None:
            return None
        return self.recent.report(loaded.profile, tuple(loaded.model.ledger_features))

    def portfolio(self) -> Portfolio:
        """The latest scoring run's portfolio; read again when `latest` points to a new run or the file changes."""
        scores = self.settings.scores_dir
        path = scores / LATEST_RUN / PORTFOLIO
        try:
            real = path.resolve(strict=True)
            stat = real.stat()
        except (FileNotFoundError, RuntimeError):
            raise NoPortfolio(
                f"no scoring run in {scores}: `python model.py score` makes one (CLV_SCORES_DIR names "
                "the folder), and this serves the latest"
            ) from None
        key = (str(real), stat.st_mtime_ns, stat.st_size)
        if self.shown is None or self.shown[0] != key:
            try:
                self.shown = (key, read_portfolio(real.parent))
            except DataContractError as exc:
                raise NoPortfolio(str(exc)) from None
        return self.shown[1]


class NoPortfolio(Exception):
    """No scoring run to show: 404, with how to make one."""


class NotReady(Exception):
    """No model serves; the message says why."""


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


def check_dates(loaded: LoadedModel, customers: list[CustomerIn], batch: bool = False) -> None:
    """InputError naming every date after its customer's as_of."""
    errors = []
    for i, customer in enumerate(customers):
        errors += _late_dates(
            customer, customer.as_of or loaded.default_as_of, ("body", "customers", i) if batch else ("body",)
        )
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
        bank = concat_banks([bank_from_request(customers[i], day) for i in rows])
        X[rows] = feature_matrix(bank, day)
        gone[rows] = former(bank, day)
    return X, gone


def score(
    loaded: LoadedModel, customers: list[CustomerIn], recent: RecentRows | None = None, curve: list[bool] | None = None
) -> list[dict]:
    """Scores for request customers, through the same feature path and model call as batch scoring; their
    rows join the `recent` window the drift is measured on. `curve` says whose answer carries the monthly curve."""
    as_ofs = [customer.as_of or loaded.default_as_of for customer in customers]
    X, gone = feature_rows(customers, as_ofs)
    out = predict_rows(loaded.model, X, gone)
    if recent is not None:
        recent.add(X, out["point"], out["churn"])
    return answers(loaded, customers, as_ofs, X, out, curve or [False] * len(customers))


def answers(
    loaded: LoadedModel,
    customers: list[CustomerIn],
    as_ofs: list[dt.date],
    X: np.ndarray,
    out: dict,
    curve: list[bool],
) -> list[dict]:
    """The model's outputs as the response's dicts (PredictionOut's fields), every array turned into Python
    numbers in one call rather than one number at a time."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    meta = loaded.metadata
    base = round(loaded.model.expected_value_, 2)
    point, low, high = (out[key].round(2).tolist() for key in ("point", "low", "high"))
    confidence = out["confidence"].round(4).tolist()
    churn = np.where(np.isnan(out["churn"]), None, out["churn"].round(4)).tolist()
    no_churn = None if loaded.model.churn_ is not None else NO_CHURN_MODEL
    churn_months = meta.churn_months
    order = driver_order(out["contrib"], TOP)
    values = np.take_along_axis(X, order, axis=1)
    values = np.where(np.isnan(values), None, values).tolist()
    contributions = np.take_along_axis(out["contrib"], order, axis=1).round(2).tolist()
    names = [[FEATURE_NAMES[j] for j in row] for row in order.tolist()]
    gone = out["gone"].tolist()
    horizons = _horizons(loaded, out)
    results = [
        {
            "customer_id": customer.customer_id,
            "predicted_clv": point[i],
            "clv_interval": {"low": low[i], "high": high[i], "level": meta.interval_level},
            "confidence_score": confidence[i],
            "horizon_months": meta.horizon_months,
            "churn_probability": churn[i],
            "churn_months": churn_months,
            "churn_reason": GONE_REASON if gone[i] else no_churn,
            "horizons": horizons[i],
            "as_of": as_ofs[i],
            "drivers": []
            if gone[i]
            else [
                {"feature": feature, "value": value, "contribution": contribution}
                for feature, value, contribution in zip(names[i], values[i], contributions[i], strict=True)
            ],
            "drivers_base": base,
            "model_version": loaded.version,
            "prediction_timestamp": now,
        }
        for i, customer in enumerate(customers)
    ]
    asked = [i for i, wanted in enumerate(curve) if wanted]
    if asked:
        for i, points in zip(asked, _curves(loaded, out, asked), strict=True):
            results[i]["curve"] = points
    return results


def _horizons(loaded: LoadedModel, out: dict) -> list[list[dict]]:
    """Each row's value of every horizon (the headline's alone for a model trained before horizons)."""
    horizons = out["horizons"] or {loaded.metadata.horizon_months: (out["point"], out["low"], out["high"])}
    columns = [(months, *(values.round(2).tolist() for values in triple)) for months, triple in horizons.items()]
    return [
        [{"months": months, "clv": clv[i], "low": low[i], "high": high[i]} for months, clv, low, high in columns]
        for i in range(out["point"].size)
    ]


def _curves(loaded: LoadedModel, out: dict, rows: list[int]) -> list[list[dict]]:
    """The monthly curve of some rows of the answer."""
    if loaded.model.lifetime_ is None:
        raise NoCurve(f"model {loaded.version} was trained before horizons and has no curve; train a new one")
    curve = monthly_curve(loaded.model, {key: out[key][rows] for key in ("point", "churn", "gone")})
    months = curve["month"].tolist()
    survival = curve["survival"].round(6).tolist()
    margin, cumulative = (curve[key].round(2).tolist() for key in ("expected_margin", "cumulative_clv"))
    return [
        [
            {"month": m, "survival": s, "expected_margin": e, "cumulative_clv": c}
            for m, s, e, c in zip(months, survival[k], margin[k], cumulative[k], strict=True)
        ]
        for k in range(len(rows))
    ]


class NoCurve(Exception):
    """A curve asked of a model that has none: 409."""


def predict(
    loaded: LoadedModel,
    customers: list[CustomerIn],
    batch: bool = False,
    recent: RecentRows | None = None,
    curve: bool = False,
) -> list[dict]:
    check_dates(loaded, customers, batch)
    return score(loaded, customers, recent, [curve] * len(customers))


class Together:
    """Scores the small single-customer requests that arrive together in one call. A one-row feature build
    and model call cost about 0.45 ms, almost all of it the fixed cost of some hundred numpy calls; eight
    rows together cost little more than one. The call waits HOPS turns of the event loop, so that requests
    whose bytes arrive meanwhile join it. `calls` counts the scoring calls made."""

    def __init__(self, recent: RecentRows | None = None) -> None:
        self.waiting: list[tuple[LoadedModel, CustomerIn, bool, asyncio.Future]] = []
        self.calls = 0
        self.recent = recent

    async def score(self, loaded: LoadedModel, customer: CustomerIn, curve: bool = False) -> dict:
        loop = asyncio.get_running_loop()
        if not self.waiting:
            loop.call_soon(self._flush, HOPS)
        future = loop.create_future()
        self.waiting.append((loaded, customer, curve, future))
        return await future

    def _flush(self, hops: int) -> None:
        if hops > 0 and len(self.waiting) < TOGETHER:
            asyncio.get_running_loop().call_soon(self._flush, hops - 1)
            return
        waiting, self.waiting = self.waiting[:TOGETHER], self.waiting[TOGETHER:]
        if self.waiting:
            asyncio.get_running_loop().call_soon(self._flush, 0)
        # requests in flight finish on the model they started with: one call per model among the waiting
        by_model: dict[int, list[tuple[LoadedModel, CustomerIn, bool, asyncio.Future]]] = {}
        for item in waiting:
            by_model.setdefault(id(item[0]), []).append(item)
        for group in by_model.values():
            self._score_group(group)

    def _score_group(self, group: list[tuple[LoadedModel, CustomerIn, bool, asyncio.Future]]) -> None:
        self.calls += 1
        try:
            results = score(
                group[0][0], [customer for _, customer, _, _ in group], self.recent, [curve for _, _, curve, _ in group]
            )
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


async def predict_single(together: Together, loaded: LoadedModel, customer: CustomerIn, curve: bool = False) -> dict:
    check_dates(loaded, [customer])
    size = len(customer.products) + len(customer.transactions) + len(customer.ledger)
    if size > OFF_LOOP_ITEMS:  # keep the event loop free for /health while a large request computes
        return (await asyncio.to_thread(score, loaded, [customer], together.recent, [curve]))[0]
    return await together.score(loaded, customer, curve)


def first_model(settings: Settings) -> LoadedModel:
    """Train, save and load a first model, on a generated demo bank when the default data folder is empty.
    One process trains (a lock in the model folder); another waiting for it serves what it saves."""
    from clv.model.training import train_and_save
    from clv.synthetic.generator import Config, simulate, write_tables  # only on the first run

    settings.model_dir.mkdir(parents=True, exist_ok=True)
    with (settings.model_dir / ".first-model.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NotReady("another process is training the first model; it is served when saved") from None
        if not has_data(settings.data_dir):
            logger.info("no data in %s: generating %d customers", settings.data_dir, settings.first_run_customers)
            config = Config(customers=settings.first_run_customers)
            write_tables(simulate(config), settings.data_dir, config=config)
        logger.info("no model in %s: training a first one on %s", settings.model_dir, settings.data_dir)
        train_and_save(settings.data_dir, settings.model_dir)
        return artifacts.load(settings.model_dir)


def has_data(data_dir: Path) -> bool:
    return is_partitioned(data_dir) or find_table(data_dir, "transactions") is not None


def without_a_model(service: Service, error: ModelArtifactError) -> None:
    """No model could be loaded at start: say why, and make a first one only where that is safe. A broken
    model is reported, never trained over; a configured data folder with no data is never filled with a
    made-up bank (a mistyped CLV_DATA_DIR would serve a model of customers who do not exist)."""
    settings = service.settings
    if artifacts.has_latest(settings.model_dir):  # a broken model: reported, never trained over
        service.reason = str(error)
    elif not settings.train_on_start:
        service.reason = (
            f"no model in {settings.model_dir}; run `python model.py train --model-dir {settings.model_dir}`"
        )
    elif not settings.demo_data and not has_data(settings.data_dir):
        service.reason = (
            f"no model in {settings.model_dir} and no data in {settings.data_dir}: put the bank's files there "
            f"(transactions.csv at least) or point CLV_DATA_DIR at them, or train with `python model.py train`"
        )
    else:
        service.reason = "training a first model; this takes about a minute"
        service.training = asyncio.create_task(train_first(service))
    logger.warning("no model serves: %s", service.reason)


async def train_first(service: Service) -> None:
    try:
        service.serve(await asyncio.to_thread(first_model, service.settings))
    except NotReady as exc:
        service.reason = str(exc)
    except Exception as exc:  # the service stays up and says why
        logger.exception("first model failed")
        service.reason = f"training a first model failed: {exc}"


async def follow_latest(service: Service) -> None:
    """Look at models/clv_model_latest every CLV_RELOAD_SECONDS, and at once when woken (SIGHUP)."""
    assert service.wake is not None, "the app's lifespan makes the event before it follows"
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(service.wake.wait(), service.settings.reload_seconds)
        if service.wake.is_set():  # an operator asked (SIGHUP): a version refused before is looked at again
            service.wake.clear()
            service.refused = None
        try:
            await take_latest(service)
        except Exception:  # the service keeps serving what it serves; the next look tries again
            logger.exception("looking for a new model failed")


async def take_latest(service: Service) -> None:
    """Serve the version `latest` points at, once it is verified; refuse (log, count) one that is not."""
    if service.training is not None and not service.training.done():
        return  # the first model is being trained here: it is served when saved, not loaded a second time
    link = service.settings.model_dir / LATEST
    if not link.exists():
        return
    target = link.resolve()
    if (service.loaded is not None and target == service.loaded.path) or target == service.refused:
        return
    try:
        loaded = await asyncio.to_thread(artifacts.load, target)
    except ModelArtifactError as exc:
        service.refused = target
        telemetry.RELOADS.labels("refused").inc()
        logger.error(
            "refused model %s, still serving %s: %s",
            target.name,
            service.loaded.version if service.loaded else "none",
            exc,
        )
        return
    service.serve(loaded)
    telemetry.RELOADS.labels("succeeded").inc()


def settle_heap() -> None:
    """Move what lives as long as the process (libraries, the model) out of the garbage collector's sight.
    A full collection walks every object, some 0.1 s with the model loaded, and stalls whatever request is
    running at that moment; frozen objects are not walked. A model swapped out is unfrozen and freed."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
