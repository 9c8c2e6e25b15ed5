"""The tables `model.py train` and `model.py evaluate` print: a model's held-out metrics against the baselines, its
deciles, its churn probability and each horizon, from the JSON document of its metadata or of an evaluation; and
the drift table `model.py monitor` prints and the versions `model.py list` does."""

from __future__ import annotations

import json

from clv.model.monitoring import DriftReport, band

METRIC_COLUMNS = ("normalized_gini", "spearman", "decile_mape", "total_error", "mae", "rmse", "r2", "interval_coverage")


def report_text(meta: dict, as_json: bool) -> str:
    """The metrics table and the deciles of a report (`evaluate`'s, or a model's metadata as JSON), then the churn
    and the horizons' tables when it has them; or, `as_json`, those parts as one line of JSON."""
    if as_json:
        shown = ("metrics", "deciles", "churn", "horizons")
        return json.dumps({k: meta[k] for k in shown if k in meta} | {"cutoff": meta.get("cutoff")})
    lines = [metrics_table(meta["metrics"]), "\ndecile  customers  mean_predicted  mean_actual"]
    lines += [
        f"{row['decile']:>6d} {row['customers']:>10d} {row['mean_predicted']:>15.2f} {row['mean_actual']:>12.2f}"
        for row in meta["deciles"]
    ]
    if meta.get("churn"):
        lines.append(churn_table(meta["churn"]))
    if meta.get("horizons"):
        lines.append(horizons_table(meta["horizons"]))
    return "\n".join(lines)


def metrics_table(metrics: dict) -> str:
    """One line of metrics per set of predictions (the model, the baselines, the oracle), or why a set is absent."""
    header = f"{'':18s}" + "".join(f"{c:>18s}" for c in METRIC_COLUMNS)
    lines = [header]
    for name, values in metrics.items():
        if not values:
            lines.append(f"{name:18s}" + f"{'(no oracle_clv.csv for this cutoff)':>36s}")
            continue
        cells = "".join(f"{values[c]:>18.3f}" if values.get(c) is not None else f"{'':>18s}" for c in METRIC_COLUMNS)
        lines.append(f"{name:18s}{cells}")
    return "\n".join(lines)


def horizons_table(horizons: list[dict]) -> str:
    """Each horizon's value against the naive annuity, where it was judged, or the word that it is extrapolated."""
    lines = ["\nmonths  judged at    customers  gini  annuity_gini  decile_mape  annuity_mape  coverage"]
    for h in horizons:
        if not h["judged"]:
            lines.append(
                f"{h['months']:>6d}  extrapolated (past the data; interval margin from "
                f"{h['extrapolated_from'] or 'the headline'} months)"
            )
            continue
        model, annuity = h["model"], h["baseline_annuity"]
        cells = [
            model["normalized_gini"],
            annuity["normalized_gini"],
            model["decile_mape"],
            annuity["decile_mape"],
            model["interval_coverage"],
        ]
        widths = (6, 14, 13, 14, 10)
        text = "".join(f"{c:>{w}.3f}" if c is not None else f"{'-':>{w}}" for c, w in zip(cells, widths, strict=True))
        lines.append(f"{h['months']:>6d}  {h['cutoff']}  {h['customers']:>9d}{text}")
    return "\n".join(lines)


def churn_table(churn: dict) -> str:
    """The churn probability's metrics, and the reliability table of the model with the ledger."""
    lines = ["\nchurn                 customers  base_rate   brier  brier_skill     auc     ece"]
    for name, m in churn.items():
        if m is None:
            continue
        skill, auc = (f"{m[k]:.4f}" if m[k] is not None else "-" for k in ("brier_skill", "auc"))
        lines.append(
            f"{name:<21} {m['customers']:>9d} {m['base_rate']:>10.4f} {m['brier']:>7.4f} {skill:>12} "
            f"{auc:>7} {m['ece']:>7.4f}"
        )
    lines.append("\nreliability  customers  mean_predicted  churn_rate")
    for row in churn["model"]["reliability"]:
        lines.append(
            f"{row['low']:.1f}-{row['high']:.1f}  {row['customers']:>12d} {row['mean_predicted']:>15.4f} "
            f"{row['churn_rate']:>11.4f}"
        )
    return "\n".join(lines)


def drift_table(report: DriftReport) -> str:
    """The population stability index of the most drifted features, the prediction and the other outputs."""
    lines = [f"{'feature':32s} {'psi':>8s}  band"]
    shown = [*report.worst(), ("(prediction)", report.prediction), *((f"({n})", v) for n, v in report.outputs.items())]
    lines += [f"{name:32s} {value:>8.3f}  {band(value)}" for name, value in shown if value is not None]
    return "\n".join(lines)


def versions_table(rows: list[dict]) -> str:
    """The saved versions with their headline metrics, the latest marked."""
    lines = [f"{'version':24s} {'trained_at':26s} {'cutoff':11s} {'gini':>6s} {'dmape':>6s} {'cover':>6s}"]
    for r in rows:
        mark = "  <- latest" if r["latest"] else ""
        cells = " ".join(
            f"{r[k]:>6.3f}" if r[k] is not None else f"{'-':>6s}"
            for k in ("normalized_gini", "decile_mape", "interval_coverage")
        )
        lines.append(f"{r['version']:24s} {r['trained_at']:26s} {r['cutoff'] or '-':11s} {cells}{mark}")
    return "\n".join(lines)
