"""The HTTP app: its routes (predictions) and routers (operations, metrics, the page), lifespan, middlewares and error
handlers. What a request does lives in clv.service.answer; the model it serves in clv.service.lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from clv.batch.portfolio import Portfolio
from clv.model import artifacts
from clv.model.artifacts import LoadedModel, ModelArtifactError
from clv.model.predictor import NoCurve
from clv.service import telemetry
from clv.service.answer import InputError, predict, predict_single
from clv.service.lifecycle import NoPortfolio, NotReady, Service, follow_latest, without_a_model
from clv.service.schemas.card import Drift, ModelCard
from clv.service.schemas.requests import MAX_BATCH, BatchIn, CustomerIn
from clv.service.schemas.responses import (
    Alive,
    BatchOut,
    Health,
    PredictionOut,
    Problem,
    Ready,
    Unavailable,
    ValidationProblem,
)
from clv.service.security import (
    READ,
    Credentials,
    Gate,
    allowed_hosts,
    check_exposure,
    declare_security,
    headers_for,
)
from clv.service.settings import Settings, load_settings
from clv.service.web import AccessLog, LeanRoute, PageFiles, RateLimit, attach_access_log, validation_details

logger = logging.getLogger("api")
ROOT = Path(__file__).resolve().parents[2]  # the project: the page lives beside api.py
PAGE = ROOT / "index.html"
STATIC = ROOT / "static"  # the page's stylesheet and ES modules
YOUNG_OBJECTS = 10_000  # objects made and not freed that start a collection of the youngest generation


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
CurveQuery = Annotated[bool, Query(description="Also answer the month-by-month curve to the longest horizon.")]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Serve the latest model (or say why there is none) and follow `latest` while the app runs."""
    service: Service = app.state.service
    # the log's thread stops, and its queued lines are written, however the app ends (a failed start too)
    with contextlib.closing(attach_access_log(service.settings.log_file)):
        if service.settings.auth == "off":
            logger.warning(
                "CLV_AUTH=off: every route is open to whoever reaches %s:%d, without a key or token",
                service.settings.host,
                service.settings.port,
            )
        try:
            settings = service.settings  # a version not signed by CLV_MODEL_VERIFY_KEY's pair, when set, is refused
            service.serve(await asyncio.to_thread(artifacts.load, settings.model_dir, None, settings.model_verify_key))
        except ModelArtifactError as exc:
            without_a_model(service, exc)
        service.wake = asyncio.Event()  # in the app's own loop
        follower = asyncio.create_task(follow_latest(service))
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # signals only in the main thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, service.wake.set)
        # a scoring call makes a few thousand objects and reference counting frees them all: at the default threshold
        # (700) the collector ran every few requests and found nothing, 3% of a request's instructions
        threshold = gc.get_threshold()
        gc.set_threshold(YOUNG_OBJECTS, *threshold[1:])
        yield
        gc.set_threshold(*threshold)
        gc.unfreeze()
        for task in (follower, service.training):
            if task is not None:
                task.cancel()


REFUSALS = {
    409: {"model": Problem, "description": "A curve asked of a model trained before horizons."},
    413: {"model": Problem, "description": "The body is over the size limit."},
    422: {"model": ValidationProblem, "description": "A field is wrong, or a date lies after as_of."},
    429: {"model": Problem, "description": "Over the rate limit; Retry-After says when to try again."},
    503: {"model": Problem, "description": "No model serves yet; the detail says why."},
}


async def predict_one(customer: CustomerIn, loaded: ModelDep, request: Request, curve: CurveQuery = False) -> Response:
    """Score one customer. Dates may be ISO dates or datetimes; none may lie after as_of."""
    return typed_json(await predict_single(request.app.state.service.batcher, loaded, customer, curve))


async def predict_batch(batch: BatchIn, loaded: ModelDep, request: Request, curve: CurveQuery = False) -> Response:
    recent = request.app.state.service.recent
    results = await asyncio.to_thread(predict, loaded, batch.customers, True, recent, curve)
    return typed_json(BatchOut(predictions=results))


def add_predictions(app: FastAPI) -> None:
    """The traffic's two routes, on the app's own router, where they are matched once: the routes of an included
    router are matched twice a request, through FastAPI's include contexts. A JSON body takes LeanRoute's short
    way past FastAPI's request handling; anything else, FastAPI's own."""
    common = {"methods": ["POST"], "tags": ["predict"], "responses": REFUSALS, "route_class_override": LeanRoute}
    app.router.add_api_route("/predict/clv", predict_one, response_model=PredictionOut, **common)
    batch = f"Score up to {MAX_BATCH:,} customers; one result each, in order."
    app.router.add_api_route("/predict/clv/batch", predict_batch, response_model=BatchOut, description=batch, **common)


operations = APIRouter(tags=["operations"])


@operations.get(
    "/health",
    response_model=Health,
    response_model_exclude_none=True,
    responses={503: {"model": Unavailable, "description": "No model serves; why."}},
)
async def health(service: ServiceDep, request: Request) -> Health | JSONResponse:
    """200 with the model serving; 503 with the reason while there is none. Open to all; the model's version, its
    training time, the uptime and whether the data was generated only to a caller with clv:read."""
    if service.loaded is None:
        return unavailable(service, request)
    if READ not in request.state.caller.scopes:
        return Health(status="ok")
    meta = service.loaded.metadata
    uptime = round(time.monotonic() - service.started, 1)
    return Health(
        status="ok",
        model_version=meta.version,
        trained_at=meta.trained_at,
        uptime_seconds=uptime,
        synthetic_data=meta.synthetic_data,
    )


def unavailable(service: Service, request: Request) -> JSONResponse:
    body = Unavailable(status="unavailable", reason=service.reason, request_id=request.state.request_id)
    return JSONResponse(body.model_dump(), 503, {"Retry-After": "30"})


@operations.get("/livez", response_model=Alive)
async def livez() -> Alive:
    """The process answers (Kubernetes' liveness probe): restart it when this fails."""
    return Alive(status="alive")


@operations.get(
    "/readyz", response_model=Ready, responses={503: {"model": Unavailable, "description": "No model serves; why."}}
)
async def readyz(service: ServiceDep, request: Request) -> Ready | JSONResponse:
    """A model serves (Kubernetes' readiness probe): send traffic only while this is 200."""
    if service.loaded is None:
        return unavailable(service, request)
    return Ready(status="ready", model_version=service.loaded.version)


@operations.get("/model", responses={503: REFUSALS[503]})
async def model_card(loaded: ModelDep, service: ServiceDep) -> ModelCard:
    """The model card: data, cutoff, held-out metrics against baselines, deciles, importance, and the input
    drift of the recent requests against the training rows."""
    report = service.drift(loaded)
    drift = None if report is None else Drift.of(report)
    return ModelCard.of(loaded.metadata, loaded.model.scale_, drift)


@operations.get(
    "/portfolio",
    response_model=Portfolio,
    responses={404: {"model": Problem, "description": "No scoring run yet; the detail says how to make one."}},
)
async def portfolio(service: ServiceDep) -> Portfolio:
    """The latest scoring run's portfolio: the bank's value at each horizon, its concentration, segments, value
    at risk and the customers who hold the most of it."""
    return service.portfolio()


monitoring = APIRouter(tags=["operations"])  # mounted unless CLV_METRICS=false


@monitoring.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus' format."}},
)
async def metrics(service: ServiceDep) -> Response:
    """Request counts and latency by route and status, predictions, the serving model, reloads, input drift."""
    if service.loaded is not None:
        telemetry.publish_drift(service.drift(service.loaded), service.recent.count, service.recent.columns)
    body, content_type = telemetry.exposition()
    return Response(body, media_type=content_type)


page = APIRouter(include_in_schema=False)


@page.get("/")
async def index() -> FileResponse:
    return FileResponse(PAGE, media_type="text/html", headers={"Cache-Control": "no-cache"})


def problem(status: int, detail: object, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status, headers)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(422, validation_details(exc.errors()))

    @app.exception_handler(InputError)
    async def contradicts(request: Request, exc: InputError) -> JSONResponse:
        return problem(422, validation_details(exc.errors))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's only 400: a body it cannot decode (not UTF-8): as malformed JSON
            error = {"loc": ["body"], "msg": "the body is not valid UTF-8 JSON", "type": "json_invalid"}
            return problem(422, validation_details([error]))
        return problem(exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(NoPortfolio)
    async def no_portfolio(request: Request, exc: NoPortfolio) -> JSONResponse:
        return problem(404, str(exc))

    @app.exception_handler(NoCurve)
    async def no_curve(request: Request, exc: NoCurve) -> JSONResponse:
        return problem(409, str(exc))

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, exc: NotReady) -> JSONResponse:
        request_id = request.state.request_id
        body = {"detail": f"no model is serving: {exc}", "request_id": request_id}
        return JSONResponse(body, 503, {"Retry-After": "30"})

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        # the body says nothing of the error (no path, no exception text): the log has it under the request id
        request_id = getattr(request.state, "request_id", "")
        logger.exception("request %s failed: %s %s", request_id, request.method, request.url.path)
        body = {"detail": "internal error; the service's log has it under the request id", "request_id": request_id}
        return JSONResponse(body, 500, {"X-Request-ID": request_id})


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; without settings, they come from the CLV_* variables (SettingsError names a bad one)."""
    settings = settings or load_settings()
    app = FastAPIOffline(  # FastAPI with /docs and /redoc served from the package, no CDN
        title="Bank CLV service",
        version="1.0",
        description="Customer lifetime value: discounted net margin over the next months, with an 80% interval.",
        lifespan=lifespan,
        # the service's telemetry is its Prometheus metrics and its request log: FastAPI's native OpenTelemetry,
        # with no provider configured, would only look at every request whether one has been since
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = Service(settings)
    app.state.credentials = credentials = Credentials(settings)  # SettingsError: a keys file or OIDC half set
    check_exposure(settings, credentials)  # SettingsError: api.py says it in one line, exit 2
    add_predictions(app)
    for router in (operations, page, *([monitoring] if settings.metrics else [])):
        app.include_router(router)
    app.mount("/static", PageFiles(directory=STATIC), name="static")
    # the prediction routes carry the traffic: matched first, before the documentation's own routes
    app.router.routes.sort(key=lambda route: not isinstance(route, LeanRoute))
    add_error_handlers(app)
    declare_security(app)
    # outermost last: the log sees (and heads) every answer, CORS wraps every refusal; the gate checks the caller
    # before it reads the body
    app.add_middleware(
        Gate,
        credentials=credentials,
        hosts=allowed_hosts(settings),
        rate_limit=RateLimit(settings.rate_limit, settings.rate_limit_storage),
        max_bytes=settings.max_body_bytes,
        body_seconds=settings.body_timeout_seconds,
    )
    if settings.cors_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_list,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-Request-ID", "Authorization", "X-API-Key"],
            expose_headers=["X-Request-ID", "Retry-After", "WWW-Authenticate"],
        )
    app.add_middleware(AccessLog, metrics=settings.metrics, headers=headers_for)
    return app


def typed_json(value: BaseModel) -> Response:
    """A typed answer serialized once, by pydantic-core, to JSON: what FastAPI does for a returned model in three
    passes (validate, dump to Python, encode). The route still names its response_model, for /openapi.json. A field
    the answer leaves unset (the curve, unless asked for) stays out of it."""
    return Response(value.__pydantic_serializer__.to_json(value, exclude_unset=True), media_type="application/json")
