"""Input drift: the population stability index (PSI) of feature rows and predictions against a training profile.

A `Profile` records, per feature and for the prediction, the training rows' quantile bins and the share of rows
in each; `psi` compares a window of rows with it. PSI = sum over bins of (actual - expected) * ln(actual /
expected); below 0.1 is stable, 0.1 to 0.25 moderate, above 0.25 significant.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from clv.common.io import atomic_path

logger = logging.getLogger(__name__)

PROFILE_FORMAT = 1
PREDICTION = "prediction"
EPSILON = 1e-4  # the share an empty bin counts as, so that ln(actual / expected) stays finite
MODERATE = 0.1
SIGNIFICANT = 0.25


class DriftError(ValueError):
    """Rows that cannot be compared with a profile: a feature column missing, no rows, or lengths that differ."""


def band(value: float) -> str:
    """'stable' below 0.1, 'moderate' from 0.1 to 0.25, 'significant' above 0.25."""
    if value > SIGNIFICANT:
        return "significant"
    return "moderate" if value >= MODERATE else "stable"


@dataclass(frozen=True)
class Histogram:
    """One variable's reference distribution.

    Bins are right-closed and open at both ends: (-inf, edges[0]], (edges[0], edges[1]], ..., (edges[-1], inf),
    then one bin for NaN. `shares` holds the reference share of each: len(edges) + 2 numbers, the last NaN's.
    """

    name: str
    edges: tuple[float, ...]
    shares: tuple[float, ...]

    def to_json(self) -> dict:
        return {"name": self.name, "edges": list(self.edges), "shares": list(self.shares)}

    @classmethod
    def from_json(cls, data: dict) -> Histogram:
        return cls(data["name"], tuple(map(float, data["edges"])), tuple(map(float, data["shares"])))


@dataclass(frozen=True)
class Profile:
    """The training rows' distributions: one `Histogram` per feature, in the model's order, and the prediction's."""

    features: tuple[Histogram, ...]
    prediction: Histogram
    rows: int
    bins: int
    epsilon: float = EPSILON
    outputs: tuple[Histogram, ...] = ()  # the model's other outputs (the churn probability); none in older profiles

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.features)

    def histogram(self, name: str) -> Histogram:
        return self.prediction if name == PREDICTION else self._by_name[name]

    @functools.cached_property
    def _by_name(self) -> dict[str, Histogram]:
        return {h.name: h for h in self.features}

    @functools.cached_property
    def _layout(self) -> tuple[np.ndarray, np.ndarray]:
        # Built once per profile: every scrape then only bins the window's rows.
        edges, expected = _layout([*self.features, self.prediction])
        return edges, np.maximum(expected, self.epsilon)

    def to_json(self) -> dict:
        """A JSON-ready dict (finite floats only; every float survives `json.dumps` and back exactly)."""
        return {
            "format": PROFILE_FORMAT,
            "rows": self.rows,
            "bins": self.bins,
            "epsilon": self.epsilon,
            "features": [h.to_json() for h in self.features],
            "prediction": self.prediction.to_json(),
            "outputs": [h.to_json() for h in self.outputs],
        }

    @classmethod
    def from_json(cls, data: dict | str) -> Profile:
        data = json.loads(data) if isinstance(data, str) else data
        if data.get("format") != PROFILE_FORMAT:
            raise DriftError(
                f"drift profile format {data.get('format')!r} is not {PROFILE_FORMAT}; rebuild it with "
                "clv.model.monitoring.reference_profile from the model's training rows"
            )
        features = tuple(Histogram.from_json(h) for h in data["features"])
        prediction = Histogram.from_json(data["prediction"])
        outputs = tuple(Histogram.from_json(h) for h in data.get("outputs", []))
        return cls(features, prediction, int(data["rows"]), int(data["bins"]), float(data["epsilon"]), outputs)


@dataclass(frozen=True)
class DriftReport:
    """PSI of each feature (and of the prediction, when predictions were given) for a window of `rows` rows."""

    features: dict[str, float]
    prediction: float | None
    rows: int
    reference_rows: int
    outputs: dict[str, float] = field(default_factory=dict)  # PSI of the model's other outputs, when measured

    def band(self, value: float) -> str:
        return band(value)

    def worst(self, top: int | None = None) -> list[tuple[str, float]]:
        """Features by PSI, most drifted first."""
        return sorted(self.features.items(), key=lambda item: -item[1])[:top]

    def to_json(self) -> dict:
        return {
            "features": self.features,
            "prediction": self.prediction,
            "bands": {name: band(value) for name, value in self.features.items()},
            "prediction_band": None if self.prediction is None else band(self.prediction),
            "drifted": [name for name, value in self.worst() if value >= MODERATE],
            "thresholds": {"moderate": MODERATE, "significant": SIGNIFICANT},
            "rows": self.rows,
            "reference_rows": self.reference_rows,
            "outputs": self.outputs,
        }


def reference_profile(
    X: pd.DataFrame, predictions: np.ndarray, bins: int = 10, outputs: dict[str, np.ndarray] | None = None
) -> Profile:
    """The distributions of the training rows `X` (every column, in order) and of the model's `predictions`.

    Parameters
    ----------
    X
        Feature rows, one column per feature; NaN is a value of its own (the missing bin).
    predictions
        The model's prediction for each row of `X`.
    bins
        Quantile bins per variable before repeated edges collapse; a value held by a bin's worth of rows or
        more (zeros of a count) gets a bin of its own.
    """
    if bins < 2:
        raise ValueError(f"bins={bins}: a profile needs 2 bins or more")
    if not X.columns.is_unique:
        raise DriftError(f"feature rows repeat column(s) {sorted(set(X.columns[X.columns.duplicated()]))}")
    names = [str(name) for name in X.columns]
    values = _values(X, list(X.columns), predictions)
    edges = [_edges(values[:, j], bins) for j in range(values.shape[1])]
    histograms = [Histogram(name, tuple(e), ()) for name, e in zip([*names, PREDICTION], edges, strict=True)]
    padded, _ = _layout(histograms)
    shares = _counts(values, padded) / len(values)
    histograms = [
        Histogram(h.name, h.edges, tuple(float(s) for s in (*shares[j, : len(h.edges) + 1], shares[j, -1])))
        for j, h in enumerate(histograms)
    ]
    logger.info("drift profile of %d rows, %d features", len(values), len(names))
    others = tuple(_histogram(name, np.asarray(v, np.float64), bins) for name, v in (outputs or {}).items())
    return Profile(tuple(histograms[:-1]), histograms[-1], len(values), bins, EPSILON, others)


def _histogram(name: str, values: np.ndarray, bins: int) -> Histogram:
    """One variable's reference histogram (an output's: NaN, who has none, in the missing bin)."""
    edges = tuple(_edges(values, bins))
    padded, _ = _layout([Histogram(name, edges, ())])
    shares = _counts(values[:, None], padded)[0] / values.size
    return Histogram(name, edges, tuple(float(x) for x in (*shares[: len(edges) + 1], shares[-1])))


def output_psi(profile: Profile, outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """PSI of each profiled output given in `outputs` (the churn probability) against its reference."""
    result = {}
    for h in profile.outputs:
        if h.name not in outputs:
            continue
        values = np.asarray(outputs[h.name], np.float64)
        edges, expected = _layout([h])
        actual = np.maximum(_counts(values[:, None], edges)[0] / max(values.size, 1), profile.epsilon)
        expected = np.maximum(expected[0], profile.epsilon)
        result[h.name] = float(((actual - expected) * np.log(actual / expected)).sum())
    return result


def psi(profile: Profile, X: pd.DataFrame, predictions: np.ndarray | None = None) -> DriftReport:
    """PSI of every profiled feature in `X` (other columns are ignored) and, if given, of `predictions`."""
    names = profile.feature_names
    values = _values(X, names, predictions)
    edges, expected = profile._layout
    if predictions is None:
        edges, expected = edges[:-1], expected[:-1]
    actual = np.maximum(_counts(values, edges) / len(values), profile.epsilon)
    index = ((actual - expected) * np.log(actual / expected)).sum(axis=1).tolist()
    return DriftReport(
        dict(zip(names, index[: len(names)], strict=True)),
        None if predictions is None else index[-1],
        len(values),
        profile.rows,
    )


def drift(
    profile: Profile,
    X: pd.DataFrame,
    predictions: np.ndarray,
    ledger_features: tuple[str, ...] = (),
    min_rows: int = 1,
    outputs: dict[str, np.ndarray] | None = None,
) -> DriftReport:
    """PSI as the service and `model.py monitor` report it: every feature and the prediction over all rows,
    except the profit ledger's features, over the rows that carry a ledger. A customer scored without a
    ledger (most API requests) leaves them empty by design; that is not drift. With fewer than `min_rows`
    ledger rows the ledger's features are left out of the report."""
    report = psi(profile, X, predictions)
    report = replace(report, outputs=output_psi(profile, outputs or {}))
    ledger = [name for name in ledger_features if name in report.features]
    if not ledger:
        return report
    has_ledger = X[ledger].notna().any(axis=1).to_numpy()
    features = {name: value for name, value in report.features.items() if name not in ledger}
    if has_ledger.sum() >= min_rows:
        ledger_report = psi(profile, X[has_ledger])
        features |= {name: ledger_report.features[name] for name in ledger}
    return DriftReport(features, report.prediction, report.rows, report.reference_rows, report.outputs)


def plot_drift(profile: Profile, X: pd.DataFrame, report: DriftReport, path: Path, top: int = 6) -> Path:
    """A PNG of the `top` most drifted features: reference and current share per bin, PSI in each title."""
    # Imported here: a service that only computes PSI on every scrape should not pay for matplotlib.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    worst = report.worst(top)
    if not worst:
        raise DriftError("the drift report has no features to plot")
    histograms = [profile.histogram(name) for name, _ in worst]
    padded, _ = _layout(histograms)
    now = _counts(_values(X, [h.name for h in histograms], None), padded) / len(X)
    columns = min(3, len(worst))
    rows = math.ceil(len(worst) / columns)
    # A Figure with its own Agg canvas, not pyplot: no global backend or figure registry, safe beside a server.
    figure = Figure(figsize=(5.2 * columns, 3.6 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, hist, current, (name, value) in zip(axes, histograms, now, worst, strict=False):
        x = np.arange(len(hist.shares))
        ax.bar(x - 0.2, hist.shares, 0.4, label="reference")
        ax.bar(x + 0.2, [*current[: len(hist.edges) + 1], current[-1]], 0.4, label="now")
        ax.set_xticks(x, _bin_labels(hist.edges), rotation=40, ha="right", fontsize=7)
        ax.set_ylabel("share of rows")
        ax.set_title(f"{name}: PSI {value:.3f} ({band(value)})", fontsize=9)
    for ax in axes[len(worst) :]:
        ax.set_axis_off()
    axes[0].legend(fontsize=7)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)  # the temporary name ends in .tmp, so say the format
    return Path(path)


def _values(X: pd.DataFrame, names: list[str] | tuple[str, ...], predictions: np.ndarray | None) -> np.ndarray:
    """The named columns (and the predictions last) as one float matrix, rows by variables."""
    missing = [name for name in names if name not in X.columns]
    if missing:
        raise DriftError(
            f"feature rows lack {len(missing)} profiled column(s): {', '.join(repr(m) for m in missing[:10])}; "
            "build them with clv.model.features.build_features"
        )
    if len(X) == 0:
        raise DriftError("no feature rows to compare with the profile")
    frame = X if list(X.columns) == list(names) else X[list(names)]
    values = frame.to_numpy(dtype=np.float64)
    if predictions is None:
        return values
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
    if predictions.size != len(values):
        raise DriftError(f"{predictions.size} predictions for {len(values)} feature rows")
    return np.column_stack([values, predictions])


def _edges(values: np.ndarray, bins: int) -> list[float]:
    """Right-closed cut points from the reference's quantiles; outer bins stay open, NaN is binned apart."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:  # never observed (the ledger of a bank without one): only the missing bin holds rows
        return []
    lo, hi = float(finite.min()), float(finite.max())
    if lo == hi:
        # A constant gets a bin of exactly its value, so that a move to any other value shows as drift.
        return [float(np.nextafter(lo, -np.inf)), lo]
    # inverted_cdf cuts at observed values, so a count's quantiles are counts, not interpolations between them.
    cuts, repeats = np.unique(np.quantile(finite, np.arange(1, bins) / bins, method="inverted_cdf"), return_counts=True)
    # A value at two quantiles or more holds a bin's worth of rows: the edge one float below it gives it a bin
    # of its own, (prev(v), v]. The lowest value needs none: its bin (-inf, lo] holds nothing else.
    masses = cuts[(repeats > 1) & (cuts > lo)]
    # No edge at hi or above: the top bin ends open above the largest training value, as the bottom one
    # starts open below the smallest, so a value just past the training range counts with its neighbours.
    edges = np.union1d(cuts[cuts < hi], np.nextafter(masses, -np.inf))
    counts = np.bincount(np.searchsorted(edges, finite, side="left"), minlength=edges.size + 1)
    return edges[counts[:-1] > 0].tolist()  # an empty bin merges into the one above it


def _layout(histograms: list[Histogram]) -> tuple[np.ndarray, np.ndarray]:
    """Edges as one matrix, variables by the most edges, padded with +inf (which no value exceeds); the
    reference shares in the bins `_counts` gives, NaN's last."""
    most = max(len(h.edges) for h in histograms)
    edges = np.full((len(histograms), most), np.inf)
    expected = np.zeros((len(histograms), most + 2))
    for j, h in enumerate(histograms):
        edges[j, : len(h.edges)] = h.edges
        if h.shares:
            expected[j, : len(h.edges) + 1] = h.shares[:-1]
            expected[j, -1] = h.shares[-1]
    return edges, expected


def _counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Rows per bin, variables by (most edges + 2), NaN's last: every variable at once, a pass per edge."""
    n_vars = values.shape[1]
    width = edges.shape[1] + 2
    index = np.zeros(values.shape, np.min_scalar_type(width))
    for k in range(edges.shape[1]):
        index += values > edges[:, k]  # right-closed bins: a value's bin is the number of edges below it
    index[np.isnan(values)] = width - 1
    flat = index + np.arange(n_vars) * width
    return np.bincount(flat.ravel(), minlength=n_vars * width).reshape(n_vars, width)


def _bin_labels(edges: tuple[float, ...]) -> list[str]:
    """'≤ a', '(a, b]', '= v' (a value's own bin), '> b' and 'missing', for a plot's axis."""
    if not edges:
        return ["all values", "missing"]
    below = [_just_below(e) for e in edges]
    shown = [float(np.nextafter(e, np.inf)) + 0.0 if b else e for e, b in zip(edges, below, strict=True)]  # no -0
    text = [f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}" for v in shown]  # incomes as 27,700, not 2.77e+04
    labels = [f"< {text[0]}" if below[0] else f"≤ {text[0]}"]
    for i in range(1, len(edges)):
        if below[i - 1] and shown[i - 1] == edges[i]:
            labels.append(f"= {text[i]}")
        else:
            left, right = "[" if below[i - 1] else "(", ")" if below[i] else "]"
            labels.append(f"{left}{text[i - 1]}, {text[i]}{right}")
    labels.append(f"≥ {text[-1]}" if below[-1] else f"> {text[-1]}")
    return [*labels, "missing"]


def _just_below(edge: float) -> bool:
    """Whether an edge is the float just below a short decimal (or zero): one put there by `_edges` to give
    that value a bin of its own. Only labels depend on this guess."""
    above = float(np.nextafter(edge, np.inf))
    return above == 0.0 or float(f"{edge:.12g}") == above
