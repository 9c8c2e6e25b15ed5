"""The reviewers' report (`model.py report`): one self-contained HTML file, its charts inlined as PNG data, no
network, for a model validation or a monthly management pack. It holds the model card (held-out metrics against
the baselines and the oracle, each horizon, the churn probability and its reliability table), the backtest when one
was run, the drift of the latest scoring run's customers against the training rows, and that run's portfolio.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
from pathlib import Path

from clv.batch.portfolio import Portfolio
from clv.model.card import ModelMetadata
from clv.model.monitoring import DriftReport, band

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1c2430; max-width: 1100px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #d6dbe3; }
table { border-collapse: collapse; margin: 8px 0 16px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d6dbe3; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f1f4f8; } .muted { color: #566170; } img { max-width: 100%; }
.bad { color: #a11b1b; font-weight: 600; } .ok { color: #1d6b3a; }
"""


def _cell(value: object, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,d}"
    return html.escape(str(value))


def _table(head: list[str], rows: list[list[object]], digits: int = 3) -> str:
    top = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c, digits)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{top}</tr></thead><tbody>{body}</tbody></table>"


def _png(figure) -> str:
    """A matplotlib figure as an inlined image."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return f'<img alt="chart" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _figure(width: float = 8, height: float = 3):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


DRIFT_SHOWN = 15
METRICS = ("normalized_gini", "spearman", "decile_mape", "total_error", "interval_coverage")


def card_section(meta: ModelMetadata) -> str:
    sets = {
        n: getattr(meta.metrics, n)
        for n in ("model", "model_without_ledger", "baseline_last12", "baseline_mean", "oracle")
    }
    names = [n for n, metrics in sets.items() if metrics is not None]
    rows = [[metric, *(getattr(sets[n], metric) for n in names)] for metric in METRICS]
    parts = [
        "<h2>The model</h2>",
        f"<p>Version {html.escape(meta.version)}, trained {meta.trained_at:%Y-%m-%d %H:%M} UTC on "
        f"{html.escape(meta.data_dir)} (data to {meta.data_last_date}, "
        f"{'a generated bank' if meta.synthetic_data else 'a real bank'}). Cutoff {meta.cutoff}; value over "
        f"{meta.horizon_months} months at {meta.discount_rate:.0%} a year; {meta.test_customers:,} held-out "
        "customers, split from the training customers by a hash of their id.</p>",
        "<h3>Held-out metrics against the baselines and the oracle</h3>",
        _table(["metric", *names], rows),
        "<h3>Predicted against actual, by decile</h3>",
        _table(
            ["decile", "customers", "mean predicted", "mean actual"],
            [[d.decile, d.customers, d.mean_predicted, d.mean_actual] for d in meta.deciles],
            2,
        ),
    ]
    if meta.horizons:
        rows = []
        for h in meta.horizons:
            model, annuity = h.model, h.baseline_annuity
            oracle = h.against_oracle.normalized_gini if h.against_oracle else None
            if h.judged:
                rows.append(
                    [
                        h.months,
                        str(h.cutoff),
                        h.customers,
                        model.normalized_gini,
                        annuity.normalized_gini,
                        model.decile_mape,
                        annuity.decile_mape,
                        model.interval_coverage,
                        oracle,
                    ]
                )
            else:
                rows.append([h.months, "extrapolated", None, None, None, None, None, None, oracle])
        parts += [
            "<h3>Each horizon, judged on what happened after a cutoff, or extrapolated</h3>",
            _table(
                [
                    "months",
                    "judged at",
                    "customers",
                    "Gini",
                    "annuity Gini",
                    "decile MAPE",
                    "annuity MAPE",
                    "coverage",
                    "Gini against the oracle",
                ],
                rows,
            ),
        ]
    if meta.churn is not None:
        churn = {n: getattr(meta.churn, n) for n in ("model", "model_without_ledger", "oracle")}
        names = [n for n, metrics in churn.items() if metrics is not None]
        keys = ("customers", "base_rate", "brier", "brier_skill", "auc", "ece")
        parts += [
            f"<h3>Churn probability: leaving within {meta.churn_months} months</h3>",
            _table(["metric", *names], [[k, *(getattr(churn[n], k) for n in names)] for k in keys], 4),
            "<h3>Reliability of the churn probability (the model, with the ledger)</h3>",
            _table(
                ["predicted", "customers", "mean predicted", "share that left"],
                [
                    [f"{b.low:.1f}-{b.high:.1f}", b.customers, b.mean_predicted, b.churn_rate]
                    for b in meta.churn.model.reliability
                ],
                4,
            ),
        ]
    return "\n".join(parts)


def backtest_section(folder: Path | None) -> str:
    path = None if folder is None else folder / "backtest.json"
    if path is None or not path.is_file():
        return "<h2>Backtest</h2><p class=muted>No backtest in this report: `python model.py backtest` runs one.</p>"
    result = json.loads(path.read_text())
    head = ["cutoff", "months", "judged at", "customers", *METRICS, "churn AUC", "churn ECE", "PSI max"]
    rows = []
    for row in result["cutoffs"]:
        rows.append(
            [
                row["cutoff"],
                row["horizon_months"],
                row["cutoff"],
                row["test_customers"],
                *(row[k] for k in METRICS),
                row["churn_auc"],
                row["churn_ece"],
                row["psi_max"],
            ]
        )
        for h in row.get("horizons", []):
            rows.append(
                ["", h["months"], h["judged_at"], h["test_customers"], *(h[k] for k in METRICS), None, None, None]
            )
    png = folder / "backtest.png"
    image = (
        f'<img alt="backtest" src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}">'
        if (png.is_file())
        else ""
    )
    return (
        f"<h2>Backtest</h2><p>The same training at each cutoff, judged on its held-out customers.</p>"
        f"{_table(head, rows)}{image}"
    )


def drift_section(report: DriftReport | None, why: str = "") -> str:
    if report is None:
        return f"<h2>Drift of the latest scoring run</h2><p class=muted>{html.escape(why)}</p>"
    rows = [[name, value, band(value)] for name, value in report.worst(DRIFT_SHOWN)]
    return (
        "<h2>Drift of the latest scoring run against the training rows</h2>"
        f"<p>{report.rows:,} of the run's customers against {report.reference_rows:,} training rows; prediction "
        f"PSI {_cell(report.prediction)}"
        + "".join(f", {html.escape(name)} PSI {_cell(value)}" for name, value in report.outputs.items())
        + ". Below 0.1 stable, 0.1 to 0.25 moderate, above 0.25 significant. "
        "history_days and tenure_months count time since the data began and move with any later as-of date.</p>"
        + _table(["feature", "PSI", "band"], rows)
        + f"<p class=muted>The {DRIFT_SHOWN} most drifted of {len(report.features)} features.</p>"
    )


def portfolio_section(p: Portfolio | None) -> str:
    if p is None:
        return "<h2>Portfolio</h2><p class=muted>No scoring run: `python model.py score` makes one.</p>"
    parts = [
        f"<h2>Portfolio: run {html.escape(p.run)}</h2>",
        f"<p>{p.customers:,} customers as of {p.as_of}, scored {p.scored_at:%Y-%m-%d %H:%M} UTC by model "
        f"{html.escape(p.model_version)}. Value at risk (max(CLV, 0) x churn probability, summed): "
        f"<strong>{p.value_at_risk:,.2f}</strong>.</p>",
        _table(["months", "total", "low", "high"], [[h.months, h.total, h.low, h.high] for h in p.horizons], 2),
        f"<p class=muted>The interval of a total: {html.escape(p.interval_method)}.</p>",
    ]
    figure = _figure(8, 3)
    lorenz, bars = figure.subplots(1, 2)
    shares, cumulative = [0.0], 0.0
    for d in p.deciles:
        cumulative += d.share or 0
        shares.append(cumulative)
    lorenz.plot([i / 10 for i in range(11)], shares, marker="o")
    lorenz.plot([0, 1], [0, 1], linestyle="--", color="grey")
    lorenz.set_title("share of the value held by the top share of customers", fontsize=8)
    region = p.segments.get("region", [])
    names = [r.segment for r in region]
    bars.barh(names, [r.value for r in region], label="value")
    bars.barh(names, [r.value_at_risk for r in region], label="value at risk")
    bars.set_title("value and value at risk by region", fontsize=8)
    bars.legend(fontsize=7)
    parts.append(_png(figure))
    parts.append(
        _table(
            ["decile", "customers", "value", "share"], [[d.decile, d.customers, d.value, d.share] for d in p.deciles], 2
        )
    )
    for kind, rows in p.segments.items():
        parts += [
            f"<h3>By {html.escape(kind.replace('_', ' '))}</h3>",
            _table(
                ["segment", "customers", "value", "value at risk", "churn rate", "mean CLV"],
                [[r.segment, r.customers, r.value, r.value_at_risk, r.churn_rate, r.mean_clv] for r in rows],
                2,
            ),
        ]
    parts += [
        "<h3>The 20 customers with the most value at risk</h3>",
        _table(
            ["customer", "CLV", "churn probability", "value at risk", "main driver"],
            [[r.customer_id, r.clv, r.churn_probability, r.value_at_risk, r.driver] for r in p.at_risk[:20]],
            2,
        ),
    ]
    return "\n".join(parts)


def render(meta: ModelMetadata, backtest: Path | None, drift: str, portfolio: Portfolio | None) -> str:
    now = dt.datetime.now(dt.UTC)
    title = f"CLV model report {html.escape(meta.version)}"
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>"
        f"<style>{STYLE}</style></head><body><h1>Customer lifetime value: model report</h1>"
        f"<p class=muted>Made {now:%Y-%m-%d %H:%M} UTC by `python model.py report`. How to read it: "
        "docs/portfolio.md and docs/metrics.md in the project.</p>"
        f"{card_section(meta)}{backtest_section(backtest)}{drift}{portfolio_section(portfolio)}</body></html>\n"
    )
