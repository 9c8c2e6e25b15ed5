"""The CLV service: POST /predict/clv, POST /predict/clv/batch, GET /health, GET /model and the page at /.

Run `python api.py` (or `make run`). At start it loads models/clv_model_latest; when there is none it
generates the default data if data/ is empty and trains a first model in the background, while
/health answers 503 with the reason.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import logging.handlers
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from fastapi_offline import FastAPIOffline

from clv import artifacts, dates
from clv.artifacts import LoadedModel, ModelArtifactError
from clv.bank import bank_from_request, concat_banks
from clv.estimator import top_drivers
from clv.features import FEATURE_NAMES, build_features
from clv.labels import former
from clv.schema import BatchIn, BatchOut, CustomerIn, PredictionOut
from clv.scoring import predict_rows
from clv.settings import Settings
from clv.web import (
    AccessLog,
    BodyLimit,
    RateLimit,
    RateLimited,
    access,
    attach_access_log,
    validation_details,
)

logger = logging.getLogger("api")
PAGE = Path(__file__).with_name("index.html")
OFF_LOOP_ITEMS = 500  # a request with more products, transactions and ledger months runs in a thread
TOP = 5
TOGETHER = 64  # single-customer requests scored in one call, at most
HOPS = 1  # turns of the event loop a call waits for more requests: gathers about all of 8 concurrent ones


@dataclass
class Service:
    """What the app serves: the loaded model, or why there is none."""

    settings: Settings
    loaded: LoadedModel | None = None
    reason: str = "starting"
    started: float = field(default_factory=time.monotonic)
    training: asyncio.Task | None = None


class NotReady(Exception):
    pass


class InputError(Exception):
    """A request that validated but contradicts itself (a date after as_of)."""

    def __init__(self, errors: list[dict]) -> None:
        self.errors = errors


# async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop on every request
async def get_service(request: Request) -> Service:
    return request.app.state.service


async def get_model(request: Request) -> LoadedModel:
    service: Service = request.app.state.service
    if service.loaded is None:
        raise NotReady(service.reason)
    return service.loaded


ModelDep = Annotated[LoadedModel, Depends(get_model)]
ServiceDep = Annotated[Service, Depends(get_service)]


# ---- start-up: load the latest model, or make a first one -------------------------------------


def first_model(settings: Settings) -> LoadedModel:
    """Generate the default data if there is none, train, save and load a first model."""
    from clv.training import train_and_save  # training code only on the first run

    if not any(settings.data_dir.glob("transactions.*")):
        from clv.generator import Config, simulate, write_tables

        logger.info("no data in %s: generating %d customers", settings.data_dir, settings.first_run_customers)
        write_tables(simulate(Config(customers=settings.first_run_customers)), settings.data_dir)
    logger.info("no model in %s: training a first one on %s", settings.model_dir, settings.data_dir)
    train_and_save(settings.data_dir, settings.model_dir)
    return artifacts.load(settings.model_dir)


async def train_first(service: Service) -> None:
    try:
        service.loaded = await asyncio.to_thread(first_model, service.settings)
        service.reason = "ok"
        logger.info("serving model %s", service.loaded.version)
        settle_heap()
    except Exception as exc:  # the service stays up and says why
        logger.exception("first model failed")
        service.reason = f"training a first model failed: {exc}"


def settle_heap() -> None:
    """Move what lives as long as the process (libraries, the model) out of the garbage collector's sight.
    A full collection walks every object, some 0.1 s with the model loaded, and stalls whatever request is
    running at that moment; frozen objects are not walked."""
    gc.collect()
    gc.freeze()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    service: Service = app.state.service
    log_file = attach_access_log(service.settings.log_file)
    try:
        service.loaded = await asyncio.to_thread(artifacts.load, service.settings.model_dir)
        service.reason = "ok"
        logger.info("serving model %s", service.loaded.version)
        settle_heap()
    except ModelArtifactError as exc:
        model_dir = service.settings.model_dir
        service.reason = str(exc)  # a broken model is reported, never silently replaced
        if not artifacts.has_latest(model_dir):
            if service.settings.train_on_start:
                service.reason = "training a first model; this takes about a minute"
                service.training = asyncio.create_task(train_first(service))
            else:
                service.reason = f"no model in {model_dir}; run `python model.py train --model-dir {model_dir}`"
        if service.training is None:
            logger.error("%s", service.reason)
    yield
    gc.unfreeze()
    if service.training is not None:
        service.training.cancel()
    access.removeHandler(log_file)
    log_file.close()


# ---- prediction -----------------------------------------------------------------------------


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


def score(loaded: LoadedModel, customers: list[CustomerIn]) -> list[dict]:
    """Scores for request customers, through the same feature path and model call as batch scoring.

    Customers of one as-of date, with a ledger or without, share one Bank (a Bank with a ledger table
    reads a customer without ledger rows as months of zero margin, not as unknown)."""
    as_ofs = [customer.as_of or loaded.default_as_of for customer in customers]
    groups: dict[tuple[dt.date, bool], list[int]] = {}
    for i, customer in enumerate(customers):
        groups.setdefault((as_ofs[i], bool(customer.ledger)), []).append(i)
    X = np.empty((len(customers), len(FEATURE_NAMES)))
    gone = np.empty(len(customers), bool)
    for (as_of, _), rows in groups.items():
        day = dates.to_day(as_of)
        bank = concat_banks([bank_from_request(customers[i], day) for i in rows])
        X[rows] = build_features(bank, day)
        gone[rows] = former(bank, day)
    out = predict_rows(loaded.model, X, gone)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    meta = loaded.metadata
    return [
        {
            "customer_id": customer.customer_id,
            "predicted_clv": round(float(out["point"][i]), 2),
            "clv_interval": {
                "low": round(float(out["low"][i]), 2),
                "high": round(float(out["high"][i]), 2),
                "level": meta["interval_level"],
            },
            "confidence_score": round(float(out["confidence"][i]), 4),
            "horizon_months": meta["horizon_months"],
            "as_of": as_ofs[i].isoformat(),
            "drivers": [] if out["gone"][i] else top_drivers(X[i], out["contrib"][i], TOP),
            "drivers_base": round(loaded.model.expected_value_, 2),
            "model_version": loaded.version,
            "prediction_timestamp": now,
        }
        for i, customer in enumerate(customers)
    ]


def predict(loaded: LoadedModel, customers: list[CustomerIn], batch: bool = False) -> list[dict]:
    check_dates(loaded, customers, batch)
    return score(loaded, customers)


class Together:
    """Scores the small single-customer requests that arrive together in one call. A one-row feature build
    and model call cost about 0.45 ms, almost all of it the fixed cost of some hundred numpy calls; eight
    rows together cost little more than one. The call waits HOPS turns of the event loop, so that requests
    whose bytes arrive meanwhile join it."""

    def __init__(self) -> None:
        self.waiting: list[tuple[LoadedModel, CustomerIn, asyncio.Future]] = []

    async def score(self, loaded: LoadedModel, customer: CustomerIn) -> dict:
        loop = asyncio.get_running_loop()
        if not self.waiting:
            loop.call_soon(self._flush, HOPS)
        future = loop.create_future()
        self.waiting.append((loaded, customer, future))
        return await future

    def _flush(self, hops: int) -> None:
        if hops > 0 and len(self.waiting) < TOGETHER:
            asyncio.get_running_loop().call_soon(self._flush, hops - 1)
            return
        waiting, self.waiting = self.waiting[:TOGETHER], self.waiting[TOGETHER:]
        if self.waiting:
            asyncio.get_running_loop().call_soon(self._flush, 0)
        try:  # the service serves one model; the first request's is every request's
            results = score(waiting[0][0], [customer for _, customer, _ in waiting])
        except Exception:  # score each alone, so that one request's failure stays its own
            for loaded, customer, future in waiting:
                try:
                    _settle(future, result=score(loaded, [customer])[0])
                except Exception as exc:
                    _settle(future, error=exc)
            return
        for (_, _, future), result in zip(waiting, results, strict=True):
            _settle(future, result=result)


def _settle(future: asyncio.Future, result: object = None, error: Exception | None = None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _json(content: object, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json", headers=headers)


async def predict_single(together: Together, loaded: LoadedModel, customer: CustomerIn) -> dict:
    check_dates(loaded, [customer])
    size = len(customer.products) + len(customer.transactions) + len(customer.ledger)
    if size > OFF_LOOP_ITEMS:  # keep the event loop free for /health while a large request computes
        return (await asyncio.to_thread(score, loaded, [customer]))[0]
    return await together.score(loaded, customer)


# ---- the app --------------------------------------------------------------------------------


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    limit = [Depends(RateLimit(settings.rate_limit))]
    app = FastAPIOffline(  # FastAPI with /docs and /redoc served from the package, no CDN
        title="Bank CLV service",
        version="1.0",
        description="Customer lifetime value: discounted net margin over the next months, with an 80% interval.",
        lifespan=lifespan,
    )
    app.state.service = Service(settings)
    together = Together()

    @app.post("/predict/clv", response_model=PredictionOut, tags=["predict"], dependencies=limit)
    async def predict_one(customer: CustomerIn, loaded: ModelDep) -> Response:
        """Score one customer. Dates may be ISO dates or datetimes; none may lie after as_of."""
        return _json(await predict_single(together, loaded, customer))

    @app.post("/predict/clv/batch", response_model=BatchOut, tags=["predict"], dependencies=limit)
    async def predict_batch(batch: BatchIn, loaded: ModelDep) -> Response:
        """Score up to 1,000 customers; one result each, in order."""
        return _json({"predictions": await asyncio.to_thread(predict, loaded, batch.customers, True)})

    @app.get("/health", tags=["operations"])
    async def health(service: ServiceDep) -> Response:
        """200 with the model serving; 503 with the reason while there is none."""
        if service.loaded is None:
            return _json({"status": "unavailable", "reason": service.reason}, 503)
        meta = service.loaded.metadata
        return _json({
            "status": "ok", "model_version": meta["version"], "trained_at": meta["trained_at"],
            "uptime_seconds": round(time.monotonic() - service.started, 1),
        })  # fmt: skip

    card_keys = (
        *("version", "trained_at", "data_dir", "data_last_date", "cutoff", "horizon_months", "discount_rate"),
        *("interval_level", "metrics", "deciles", "importance", "rows", "libraries", "params", "seconds"),
    )

    @app.get("/model", tags=["operations"])
    async def model_card(loaded: ModelDep) -> Response:
        """The model card: data, cutoff, held-out metrics against baselines, deciles, importance."""
        meta = loaded.metadata
        card = {k: meta.get(k) for k in card_keys}
        card["importance"] = (card["importance"] or [])[:15]
        card["confidence_definition"] = "1 / (1 + (high - low) / max(|predicted|, scale))"
        card["confidence_scale"] = loaded.model.scale_
        return _json(card)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return _json({"detail": validation_details(exc.errors())}, 422)

    @app.exception_handler(InputError)
    async def contradicts(request: Request, exc: InputError) -> Response:
        return _json({"detail": validation_details(exc.errors)}, 422)

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, exc: NotReady) -> Response:
        return _json({"detail": f"no model is serving: {exc}"}, 503, {"Retry-After": "30"})

    @app.exception_handler(RateLimited)
    async def rate_limited(request: Request, exc: RateLimited) -> Response:
        detail = f"rate limit of {exc.limit} exceeded; retry in {exc.retry_after} s"
        return _json({"detail": detail}, 429, {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _json({"detail": "internal error; the request id is in the X-Request-ID header"}, 500)

    if settings.cors_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_list, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Retry-After"])  # fmt: skip
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLog)
    return app


app = create_app()


def main() -> None:
    import uvicorn

    settings = app.state.service.settings
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=False, log_level="info")


if __name__ == "__main__":
    main()
