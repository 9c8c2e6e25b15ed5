"""The service's Prometheus metrics and the window of recent requests its input drift is measured on.

Conventional names with units: `clv_http_requests_total` and `clv_http_request_duration_seconds` by
route and status, `clv_predictions_total`, `clv_predicted_clv` and `clv_churn_probability` (histograms),
`clv_model_info` (1 for the serving version), `clv_model_reloads_total{result}`, and
`clv_input_drift_psi{feature}` with `clv_prediction_drift_psi` and `clv_drift_window_rows`. With several workers
the values live in files of prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by api.py before
the workers start), summed or, for the drift, the most recent of any worker; the drift window itself is one file
there, shared by the workers (`RecentRows`), so that every worker reports the drift of all the recent requests.
"""

from __future__ import annotations

import fcntl
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from clv.common.io import atomic_path
from clv.model.card import ModelMetadata
from clv.model.monitoring import DriftReport, Profile, drift

disable_created_metrics()  # a *_created series beside every counter says nothing a scrape needs

ROUTES = frozenset(
    {
        "/predict/clv",
        "/predict/clv/batch",
        "/health",
        "/livez",
        "/readyz",
        "/model",
        "/metrics",
        "/",
        "/docs",
        "/redoc",
        "/openapi.json",
    }
)
MIN_DRIFT_ROWS = 50  # fewer recent rows than this say nothing about a distribution

REQUESTS = Counter("clv_http_requests", "HTTP requests answered, by route and status.", ["method", "route", "status"])
LATENCY = Histogram(
    "clv_http_request_duration_seconds",
    "Time from request to response, by route.",
    ["method", "route"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
PREDICTIONS = Counter("clv_predictions", "Customers scored by the service.")
PREDICTED = Histogram(
    "clv_predicted_clv",
    "Predicted CLV of the customers scored (discounted net margin).",
    buckets=(-1000, -100, 0, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 100_000),
)
CHURN = Histogram(
    "clv_churn_probability",
    "Churn probability of the customers scored (those who had not left already).",
    buckets=(0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
)
MODEL = Gauge(
    "clv_model_info",
    "1 for the model version serving, 0 for one that served before.",
    ["version", "trained_at", "synthetic_data"],
    multiprocess_mode="mostrecent",
)
RELOADS = Counter("clv_model_reloads", "Model versions taken up (succeeded) or refused.", ["result"])
INPUT_DRIFT = Gauge(
    "clv_input_drift_psi",
    "Population stability index of the recent requests' feature against the model's training rows.",
    ["feature"],
    multiprocess_mode="mostrecent",
)
PREDICTION_DRIFT = Gauge(
    "clv_prediction_drift_psi", "Population stability index of the recent predictions.", multiprocess_mode="mostrecent"
)
WINDOW_ROWS = Gauge(
    "clv_drift_window_rows", "Recent request rows the drift is measured on.", multiprocess_mode="mostrecent"
)


_SERIES: dict[tuple[str, str, int], tuple] = {}  # a request's counter and histogram, looked up once


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def observe_request(method: str, path: str, status: int, seconds: float) -> None:
    route = path if path in ROUTES else "other"  # one series a route, never one a URL or a made-up method
    method = method if method in METHODS else "other"
    series = _SERIES.get((method, route, status))
    if series is None:
        series = _SERIES[method, route, status] = (
            REQUESTS.labels(method, route, str(status)),
            LATENCY.labels(method, route),
        )
    series[0].inc()
    series[1].observe(seconds)


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format: this process's, or every worker's in multiprocess mode."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def serving(meta: ModelMetadata, previous: ModelMetadata | None) -> None:
    """The serving model as an info metric: its labels at 1, the one it replaced at 0."""
    if previous is not None:
        _model_info(previous).set(0)
    _model_info(meta).set(1)


def _model_info(meta: ModelMetadata) -> Gauge:
    return MODEL.labels(meta.version, str(meta.trained_at), str(meta.synthetic_data).lower())


class RecentRows:
    """The feature rows and predictions of the last `size` customers scored, for the drift metrics.

    In one process they live in memory. With several workers (`folder`, the multiprocess folder) they live in
    one memory-mapped file there, `drift-window.f64`, which every worker writes and reads under a file lock:
    the window holds the recent rows of every worker, and each one reports the same drift. The file is a
    matrix of float64, `size + 1` rows by the features and the prediction; its first row holds the count of
    rows ever added, where the next one goes."""

    FILE = "drift-window.f64"

    def __init__(self, size: int, columns: list[str], folder: Path | None = None) -> None:
        self.columns, self.size = columns, size
        shape = (size + 1, len(columns) + 1)
        self.lock = threading.Lock()  # batches are scored in threads; a file lock does not part them
        self._file: int | None = None
        if folder is None:
            self.store = _empty(shape)
        else:
            path = Path(folder) / self.FILE
            self._file = os.open(Path(folder) / f"{self.FILE}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            with self._locked():
                if not path.exists() or path.stat().st_size != np.prod(shape) * 8:
                    with atomic_path(path) as tmp:  # the first worker up makes it, whole, under the lock
                        _empty(shape).tofile(tmp)
            self.store = np.memmap(path, np.float64, mode="r+", shape=shape)
        self._report: tuple[int, Profile | None, DriftReport | None] = (-1, None, None)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self.lock:
            if self._file is None:
                yield
                return
            fcntl.flock(self._file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._file, fcntl.LOCK_UN)

    @property
    def added(self) -> int:
        return int(self.store[0, 0])

    @property
    def count(self) -> int:
        return min(self.size, self.added)

    def add(self, X: np.ndarray, predictions: np.ndarray, churn: np.ndarray | None = None) -> None:
        X, predictions = X[-self.size :], predictions[-self.size :]
        with self._locked():
            added = self.added
            at = 1 + np.arange(added, added + len(X)) % self.size
            self.store[at, :-1], self.store[at, -1] = X, predictions
            self.store[0, 0] = added + len(X)
        PREDICTIONS.inc(len(predictions))
        for value in predictions:
            PREDICTED.observe(value)
        for value in () if churn is None else churn[~np.isnan(churn)]:
            CHURN.observe(value)

    def report(self, profile: Profile, ledger_features: tuple[str, ...]) -> DriftReport | None:
        """PSI of the window against the training reference (kept until new rows arrive or the reference is
        another model's); None when too few."""
        with self._locked():
            added = self.added
            if self._report[0] == added and self._report[1] is profile:
                return self._report[2]
            window = np.array(self.store[1 : 1 + min(self.size, added)])
        X, predictions = pd.DataFrame(window[:, :-1], columns=self.columns), window[:, -1]
        count = len(window)
        report = drift(profile, X, predictions, ledger_features, MIN_DRIFT_ROWS) if count >= MIN_DRIFT_ROWS else None
        with self.lock:
            self._report = (added, profile, report)
        return report


def _empty(shape: tuple[int, int]) -> np.ndarray:
    store = np.full(shape, np.nan)
    store[0] = 0.0
    return store


def publish_drift(report: DriftReport | None, rows: int, features: list[str]) -> None:
    """The window's drift as gauges; a feature the report leaves out (too few rows with a ledger) is NaN,
    never the value of rows that have left the window."""
    WINDOW_ROWS.set(rows)
    measured = {} if report is None else report.features
    for feature in features:
        INPUT_DRIFT.labels(feature).set(measured.get(feature, math.nan))
    PREDICTION_DRIFT.set(math.nan if report is None or report.prediction is None else report.prediction)
