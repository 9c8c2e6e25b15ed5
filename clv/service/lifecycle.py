"""The model the service serves: loaded at start, followed on disk and swapped whole, refused when it does not
verify, a first one trained on the first run; and the latest scoring run's portfolio it shows."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from clv.batch.portfolio import PORTFOLIO, Portfolio
from clv.batch.runs import LATEST as LATEST_RUN
from clv.batch.runs import read_portfolio
from clv.data.contract import DataContractError, find_table
from clv.data.layout import is_partitioned
from clv.model import artifacts
from clv.model.artifacts import LATEST, LoadedModel, ModelArtifactError
from clv.model.features import FEATURE_NAMES
from clv.model.monitoring import DriftReport
from clv.service import telemetry
from clv.service.answer import MicroBatcher
from clv.service.settings import Settings
from clv.service.telemetry import RecentRows

logger = logging.getLogger(__name__)


class LatestPortfolio:
    """The latest scoring run's portfolio, read again only when `latest` points to another run or its file changes."""

    def __init__(self, scores_dir: Path) -> None:
        self.scores_dir = scores_dir
        self.key: tuple | None = None  # the file's real path, time and size when read
        self.portfolio: Portfolio | None = None

    def get(self) -> Portfolio:
        path = self.scores_dir / LATEST_RUN / PORTFOLIO
        try:
            real = path.resolve(strict=True)
            stat = real.stat()
        except (FileNotFoundError, RuntimeError):
            raise NoPortfolio(
                "no scoring run yet: `python model.py score` makes one (in the folder CLV_SCORES_DIR names), "
                "and this serves the latest"
            ) from None
        key = (str(real), stat.st_mtime_ns, stat.st_size)
        if self.portfolio is None or self.key != key:
            try:
                self.portfolio, self.key = read_portfolio(real.parent), key
            except DataContractError as exc:
                logger.error("the latest scoring run's portfolio does not read: %s", exc)
                raise NoPortfolio(
                    "the latest scoring run's portfolio does not read (the service's log says why): "
                    "`python model.py score` makes a new run"
                ) from None
        return self.portfolio


@dataclass
class Service:
    """What the app serves: the loaded model (one object, swapped whole), or why there is none; the recent
    requests' feature rows (none with the metrics off); the version it refused last (not refused again at
    every look); and the latest scoring run's portfolio."""

    settings: Settings
    loaded: LoadedModel | None = None
    reason: str = "starting"
    started: float = field(default_factory=time.monotonic)
    training: asyncio.Task | None = None
    recent: RecentRows | None = field(init=False)
    batcher: MicroBatcher = field(init=False)
    refused: Path | None = None
    wake: asyncio.Event | None = None  # set to look for a new model at once (SIGHUP); made in the app's loop
    latest_run: LatestPortfolio = field(init=False)

    def __post_init__(self) -> None:
        metrics = self.settings.metrics
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # several workers: one window for all of them
        self.recent = RecentRows(self.settings.drift_window, list(FEATURE_NAMES), shared) if metrics else None
        self.batcher = MicroBatcher(self.recent)
        self.latest_run = LatestPortfolio(self.settings.scores_dir)

    def serve(self, loaded: LoadedModel) -> None:
        """Swap in a model at once: a request in flight keeps the one it started with. The trees' walk is ready
        before (compiled as the first model is served, in a few tenths of a second)."""
        loaded.model.forest_.warm()
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
        """The latest scoring run's portfolio (NoPortfolio when there is none)."""
        return self.latest_run.get()


class NoPortfolio(Exception):
    """No scoring run to show: 404, with how to make one."""


class NotReady(Exception):
    """No model serves; the message says why."""


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
        train_and_save(settings.data_dir, settings.model_dir, signing_key=settings.model_signing_key)
        return load_latest(settings)


def load_latest(settings: Settings) -> LoadedModel:
    """The version `latest` points at, verified (signed by CLV_MODEL_VERIFY_KEY's pair when that is set)."""
    return artifacts.load(settings.model_dir, verify_key=settings.model_verify_key)


def has_data(data_dir: Path) -> bool:
    return is_partitioned(data_dir) or find_table(data_dir, "transactions") is not None


def without_a_model(service: Service, error: ModelArtifactError) -> None:
    """No model could be loaded at start: say why, and make a first one only where that is safe. A broken
    model is reported, never trained over; a configured data folder with no data is never filled with a
    made-up bank (a mistyped CLV_DATA_DIR would serve a model of customers who do not exist)."""
    # service.reason is what /health and a 503 tell any caller: no path, no exception text; the log has those
    settings = service.settings
    if artifacts.has_latest(settings.model_dir):  # a broken model: reported, never trained over
        service.reason = "the latest model does not verify, so it is not served; the service's log says why"
        logger.error("no model serves: %s", error)
    elif not settings.train_on_start:
        service.reason = "no model yet; run `python model.py train` (into the folder CLV_MODEL_DIR names)"
        logger.warning("no model serves: no model in %s", settings.model_dir)
    elif not settings.demo_data and not has_data(settings.data_dir):
        service.reason = (
            "no model and no data to train one: put the bank's files (transactions.csv at least) in the folder "
            "CLV_DATA_DIR names, or train with `python model.py train`"
        )
        logger.warning("no model serves: no model in %s and no data in %s", settings.model_dir, settings.data_dir)
    else:
        service.reason = "training a first model; this takes about a minute"
        service.training = asyncio.create_task(train_first(service))
        logger.warning("no model serves: %s", service.reason)


async def train_first(service: Service) -> None:
    try:
        service.serve(await asyncio.to_thread(first_model, service.settings))
    except NotReady as exc:
        service.reason = str(exc)
    except Exception:  # the service stays up and says why, in its log
        logger.exception("first model failed")
        service.reason = "training a first model failed; the service's log says why"


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
    settings = service.settings
    link = settings.model_dir / LATEST
    if not link.exists():
        return
    target = link.resolve()
    if (service.loaded is not None and target == service.loaded.path) or target == service.refused:
        return
    try:
        # resolved again through the model folder: a `latest` that leads outside it is refused, never read
        folder = artifacts.resolve(settings.model_dir)
        loaded = await asyncio.to_thread(artifacts.load_folder, folder, settings.model_verify_key)
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
