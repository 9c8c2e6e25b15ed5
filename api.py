"""The CLV service: POST /predict/clv, POST /predict/clv/batch, GET /health, GET /model and the page at /.

Run `python api.py` (or `make run`). At start it loads models/clv_model_latest; when there is none it
generates the default data if data/ is empty and trains a first model in the background, while
/health answers 503 with the reason.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import logging.handlers
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import orjson
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from slowapi.util import get_remote_address
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clv import artifacts, dates
from clv.artifacts import LoadedModel, ModelArtifactError
from clv.estimator import top_drivers
from clv.features import bank_from_request, build_features, former
from clv.schema import BatchIn, BatchOut, CustomerIn, PredictionOut
from clv.scoring import predict_rows
from clv.settings import Settings

logger = logging.getLogger("api")
access = logging.getLogger("api.access")
PAGE = Path(__file__).with_name("index.html")
OFF_LOOP_ITEMS = 500  # a request with more products, transactions and ledger months runs in a thread
TOP = 5


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


def get_service(request: Request) -> Service:
    return request.app.state.service


def get_model(request: Request) -> LoadedModel:
    service = get_service(request)
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
        import data_gen

        logger.info("no data in %s: generating %d customers", settings.data_dir, settings.first_run_customers)
        config = data_gen.Config(customers=settings.first_run_customers)
        data_gen.write_tables(data_gen.simulate(config), settings.data_dir)
    logger.info("no model in %s: training a first one on %s", settings.model_dir, settings.data_dir)
    train_and_save(settings.data_dir, settings.model_dir)
    return artifacts.load(settings.model_dir)


async def train_first(service: Service) -> None:
    try:
        service.loaded = await asyncio.to_thread(first_model, service.settings)
        service.reason = "ok"
        logger.info("serving model %s", service.loaded.version)
    except Exception as exc:  # the service stays up and says why
        logger.exception("first model failed")
        service.reason = f"training a first model failed: {exc}"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    service: Service = app.state.service
    log_file = attach_access_log(service.settings.log_file)
    try:
        service.loaded = await asyncio.to_thread(artifacts.load, service.settings.model_dir)
        service.reason = "ok"
        logger.info("serving model %s", service.loaded.version)
    except ModelArtifactError as exc:
        service.reason = str(exc)
        if service.settings.train_on_start and "no model in" in str(exc):
            service.reason = "training a first model; this takes about a minute"
            service.training = asyncio.create_task(train_first(service))
        else:
            logger.error("%s", exc)
    yield
    if service.training is not None:
        service.training.cancel()
    access.removeHandler(log_file)
    log_file.close()


# ---- prediction -----------------------------------------------------------------------------


def _late_dates(customer: CustomerIn, as_of: dt.date, prefix: tuple) -> list[dict]:
    """Every date after as_of, named by its field."""
    errors = []
    groups = (("products", "start_date"), ("products", "end_date"), ("transactions", "transaction_date"))
    for group, name in groups:
        for i, item in enumerate(getattr(customer, group)):
            value = getattr(item, name)
            if value is not None and value > as_of:
                errors.append(
                    {"loc": [*prefix, group, i, name], "msg": f"is after as_of {as_of}", "type": "after_as_of"}
                )
    if customer.join_date is not None and customer.join_date > as_of:
        errors.append({"loc": [*prefix, "join_date"], "msg": f"is after as_of {as_of}", "type": "after_as_of"})
    return errors


def predict(loaded: LoadedModel, customers: list[CustomerIn], batch: bool = False) -> list[dict]:
    """Scores for request customers, through the same feature path and model call as batch scoring."""
    default_as_of = dt.date.fromisoformat(loaded.metadata["data_last_date"])
    rows, gone, as_ofs, errors = [], [], [], []
    for i, customer in enumerate(customers):
        as_of = customer.as_of or default_as_of
        errors += _late_dates(customer, as_of, ("body", "customers", i) if batch else ("body",))
        day = dates.to_day(as_of)
        bank = bank_from_request(customer, day)
        rows.append(build_features(bank, day))
        gone.append(former(bank, day))
        as_ofs.append(as_of)
    if errors:
        raise InputError(errors)
    X = np.vstack(rows)
    out = predict_rows(loaded.model, X, np.concatenate(gone))
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


def _json(content: object, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json", headers=headers)


async def run_prediction(loaded: LoadedModel, customers: list[CustomerIn]) -> list[dict]:
    size = sum(len(c.products) + len(c.transactions) + len(c.ledger) for c in customers)
    if size > OFF_LOOP_ITEMS:  # keep the event loop free for /health while a large request computes
        return await asyncio.to_thread(predict, loaded, customers)
    return predict(loaded, customers)


# ---- the app --------------------------------------------------------------------------------


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    limiter = Limiter(key_func=get_remote_address, headers_enabled=True, storage_uri="memory://")
    app = FastAPI(
        title="Bank CLV service",
        version="1.0",
        description="Customer lifetime value: discounted net margin over the next months, with an 80% interval.",
        lifespan=lifespan,
    )
    app.state.service = Service(settings)
    app.state.limiter = limiter
    limit = limiter.limit(settings.rate_limit)

    @app.post("/predict/clv", response_model=PredictionOut, tags=["predict"])
    @limit
    async def predict_one(request: Request, customer: CustomerIn, loaded: ModelDep) -> Response:
        """Score one customer. Dates may be ISO dates or datetimes; none may lie after as_of."""
        return _json((await run_prediction(loaded, [customer]))[0])

    @app.post("/predict/clv/batch", response_model=BatchOut, tags=["predict"])
    @limit
    async def predict_batch(request: Request, batch: BatchIn, loaded: ModelDep) -> Response:
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
        return _json({"detail": [_clean(e) for e in exc.errors()]}, 422)

    @app.exception_handler(InputError)
    async def contradicts(request: Request, exc: InputError) -> Response:
        return _json({"detail": [_clean(e) for e in exc.errors]}, 422)

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, exc: NotReady) -> Response:
        return _json({"detail": f"no model is serving: {exc}"}, 503, {"Retry-After": "30"})

    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # 429 with Retry-After

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _json({"detail": "internal error; the request id is in the X-Request-ID header"}, 500)

    if settings.cors_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_list, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "X-Request-ID"])  # fmt: skip
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLog)
    return app


def _text(value: object) -> str | int:
    """A location part or message that is safe to encode: no lone surrogates, nothing echoed."""
    if isinstance(value, int):
        return value
    return str(value).encode("utf-8", "replace").decode("utf-8")


def _clean(error: dict) -> dict:
    """A validation error without the input it refers to (which may not encode: NaN, surrogates)."""
    loc = [_text(part) for part in error.get("loc", ())]
    field_path = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        field_path += f"[{part}]" if isinstance(part, int) else (f".{part}" if field_path else str(part))
    msg = _text(error.get("msg", "invalid"))
    return {"loc": loc, "field": field_path or "body", "msg": msg, "type": _text(error.get("type", "value_error"))}


class BodyLimit:
    """413 for a body over the limit, before it is read whole or parsed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # a chunked body with no length: stop reading at the limit
                raise HTTPException(413, f"request body over {self.max_bytes:,} bytes")
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, send: Send) -> None:
        body = orjson.dumps({"detail": f"request body over {self.max_bytes:,} bytes"})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class AccessLog:
    """One line per request (id, method, path, status, latency; no personal data) and an X-Request-ID."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = dict(scope["headers"]).get(b"x-request-id", b"")
        request_id = given.decode("latin-1") if 0 < len(given) <= 64 and given.isascii() else uuid.uuid4().hex
        status = 500

        async def tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        finally:
            access.info("%s %s %s %d %.2fms", request_id, scope["method"], scope["path"], status,
                        (time.perf_counter() - started) * 1000)  # fmt: skip


def attach_access_log(path: Path) -> logging.Handler:
    """The request lines go to a rotating file (api.log) for as long as the app runs."""
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=10_000_000, backupCount=5)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    return handler


app = create_app()


def main() -> None:
    import uvicorn

    settings = app.state.service.settings
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=False, log_level="info")


if __name__ == "__main__":
    main()
