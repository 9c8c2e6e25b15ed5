// The model card: held-out metrics against the baselines, the horizons, the charts of deciles and importance, and
// the place where the input drift (drift.js) is drawn.
import { chart, frame, niceStep, svg, titled } from "./chart.js";
import { $, el, featureLabel, fill, finite, fmtDate, fmtDateTime, MONEY_SHORT, money, money0, num, PLAIN, pct, plural, SYNTHETIC_WORDS, TIME } from "./format.js";

// ---- the model card ----------------------------------------------------------------------------
const METRIC_ROWS = [
  ["normalized_gini", "Normalized Gini", "ranking; 1 is perfect, higher is better", (x) => num(x), "max"],
  ["spearman", "Spearman", "rank correlation, higher is better", (x) => num(x), "max"],
  ["decile_mape", "Decile MAPE", "calibration by decile, lower is better", (x) => pct(x), "min"],
  ["total_error", "Total error", "sum predicted ÷ sum actual − 1; 0 is best", (x) => (finite(x) ? (x >= 0 ? "+" : "\u2212") + pct(Math.abs(x)) : "—"), "zero"],
  ["mae", "MAE", "mean absolute error", (x) => money0(x), "min"],
  ["rmse", "RMSE", "root mean squared error", (x) => money0(x), "min"],
  ["r2", "R²", "variance explained, higher is better", (x) => num(x), "max"],
  ["interval_coverage", "Interval coverage", "share inside the 80% interval; 77–83% is right", (x) => pct(x), "level"],
];
const METRIC_COLUMNS = [
  ["model", "Model"], ["model_without_ledger", "Model without ledger"],
  ["baseline_last12", "Last 12 months repeated"], ["baseline_mean", "Training mean"], ["oracle", "Oracle (best reachable)"],
];

function metricsTable(card) {
  const metrics = card.metrics || {};
  const columns = METRIC_COLUMNS.filter(([key]) => metrics[key]);
  const level = card.interval_level || 0.8;
  const head = el("tr", {}, el("th", { scope: "col" }, "Held-out metric"),
    columns.map(([key, name]) => el("th", { scope: "col", class: key === "model" ? "model" : null }, name)));
  const body = METRIC_ROWS.map(([key, name, note, format, best]) => {
    const contenders = columns.filter(([c]) => c !== "oracle").map(([c]) => metrics[c][key]).filter(finite);
    const distance = (v) => (best === "max" ? -v : best === "min" ? v : best === "zero" ? Math.abs(v) : Math.abs(v - level));
    const top = contenders.length > 1 ? Math.min(...contenders.map(distance)) : null;
    return el("tr", {}, el("th", { scope: "row" }, name, el("span", { class: "metric-note" }, note)),
      columns.map(([c]) => {
        const value = metrics[c][key];
        const isBest = c !== "oracle" && top !== null && finite(value) && distance(value) === top;
        return el("td", { class: [c === "model" ? "model" : "", isBest ? "best" : ""].join(" ").trim() || null }, format(value));
      }));
  });
  return el("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Held-out metrics, scrollable" },
    el("table", { id: "metrics-table" }, el("caption", { class: "sr-only" }, "Held-out metrics of the model against the baselines"), el("thead", {}, head), el("tbody", {}, body)));
}

function comparison(card) {
  const m = card.metrics || {};
  if (!m.model || !m.baseline_last12) return null;
  const parts = [`The model ranks held-out customers with a normalized Gini of ${num(m.model.normalized_gini)}; repeating the last 12 months reaches ${num(m.baseline_last12.normalized_gini)}.`,
    `Decile MAPE: ${pct(m.model.decile_mape)} against ${pct(m.baseline_last12.decile_mape)}.`];
  if (finite(m.model.oracle_ratio)) parts.push(`It captures ${pct(m.model.oracle_ratio, 0)} of the ranking power reachable on this data (the oracle).`);
  if (finite(m.model.interval_coverage)) parts.push(`Its ${Math.round((card.interval_level || 0.8) * 100)}% intervals held ${pct(m.model.interval_coverage)} of actual values.`);
  return el("p", {}, parts.join(" "));
}

const CHURN_ROWS = [
  ["auc", "AUC", "ranking of who leaves; 0.5 is chance, higher is better", (x) => num(x)],
  ["brier", "Brier score", "mean squared error of the probability, lower is better", (x) => num(x)],
  ["brier_skill", "Brier skill", "against always the base rate; 0 is no better, higher is better", (x) => num(x)],
  ["ece", "Calibration error", "ECE over 10 bins: how far the probabilities are from what happened", (x) => pct(x)],
  ["base_rate", "Base rate", "share of held-out customers who left", (x) => pct(x)],
];
const CHURN_COLUMNS = [["model", "Model"], ["model_without_ledger", "Model without ledger"], ["oracle", "Oracle (best reachable)"]];

function churnSection(card) {
  const churn = card.churn;
  if (!churn) return el("p", { class: "muted", id: "churn-card" }, "This model was trained without a churn probability.");
  const columns = CHURN_COLUMNS.filter(([key]) => churn[key]);
  const within = plural(card.churn_months, "month", "months");
  const table = el("table", { id: "churn-table" },
    el("caption", { class: "sr-only" }, "Held-out metrics of the churn probability"),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Churn metric"), columns.map(([, name]) => el("th", { scope: "col" }, name)))),
    el("tbody", {}, CHURN_ROWS.map(([key, name, note, format]) => el("tr", {},
      el("th", { scope: "row" }, name, el("span", { class: "metric-note" }, note)),
      columns.map(([c]) => el("td", { class: c === "model" ? "model" : null }, format(churn[c][key])))))));
  const bins = churn.model.reliability || [];
  const reliability = el("table", { id: "reliability-table" },
    el("thead", {}, el("tr", {}, ["Predicted", "Customers", "Mean predicted", "Share that left"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, bins.map((b) => el("tr", {}, el("td", {}, `${pct(b.low, 0)}–${pct(b.high, 0)}`), el("td", {}, PLAIN.format(b.customers)),
      el("td", {}, pct(b.mean_predicted)), el("td", {}, pct(b.churn_rate))))));
  return el("section", { id: "churn-card", "aria-labelledby": "churn-title" },
    el("h3", { id: "churn-title" }, `Churn probability: leaving within ${within}, on ${PLAIN.format(churn.model.customers)} held-out customers`),
    el("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Churn metrics, scrollable" }, table),
    el("details", {}, el("summary", {}, "Reliability: predicted against what happened, by bin"),
      el("p", { class: "muted small" }, "A calibrated probability has each bin's share that left close to its mean predicted."),
      el("div", { class: "table-wrap" }, reliability)));
}

function horizonsCard(card) {
  const horizons = card.horizons || [];
  if (!horizons.length) return el("p", { class: "muted", id: "horizons-card" }, "This model was trained before horizons: it gives the headline value only.");
  const cell = (m, key, format = (x) => num(x, 3)) => (m && finite(m[key]) ? format(m[key]) : "—");
  const rows = horizons.map((h) => el("tr", {},
    el("th", { scope: "row" }, plural(h.months, "month", "months"), h.served ? null : el("span", { class: "metric-note" }, "judged only")),
    h.judged
      ? [el("td", {}, fmtDate(h.cutoff)), el("td", {}, PLAIN.format(h.customers)),
        el("td", { class: "model" }, cell(h.model, "normalized_gini")), el("td", {}, cell(h.baseline_annuity, "normalized_gini")),
        el("td", { class: "model" }, cell(h.model, "decile_mape", pct)), el("td", {}, cell(h.baseline_annuity, "decile_mape", pct)),
        el("td", {}, cell(h.model, "interval_coverage", pct))]
      : el("td", { colspan: 7, class: "muted" }, `extrapolated: past the data; its interval carries the ${h.extrapolated_from ? `${plural(h.extrapolated_from, "month", "months")} margin` : "headline's band"}, scaled`),
    el("td", {}, cell(h.against_oracle, "normalized_gini"))));
  const head = ["Horizon", "Judged at", "Customers", "Gini", "Annuity Gini", "Decile MAPE", "Annuity MAPE", "Coverage", "Gini against the oracle"];
  return el("section", { id: "horizons-card", "aria-labelledby": "horizons-title" },
    el("h3", { id: "horizons-title" }, "Value over longer horizons"),
    el("p", { class: "muted small" }, "Each horizon judged on what happened after a cutoff the data reaches that far, on held-out customers, against the naive annuity (the last 12 months' margin carried on). The oracle's column ranks the generator's expected value of each customer at the training cutoff by the model's prediction: 1 is the truth's own order."),
    el("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Horizon metrics, scrollable" },
      el("table", { id: "horizons-metrics" },
        el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, rows))));
}

// ---- the card's charts ----------------------------------------------------------------------------
function decileChart(deciles) {
  return (width) => {
    const height = 270;
    const m = { l: 62, r: 8, t: 12, b: 44 };
    const values = deciles.flatMap((d) => [d.mean_predicted, d.mean_actual]).filter(finite);
    const step = niceStep(Math.max(...values, 0) - Math.min(...values, 0) || 1, 5);
    const hi = Math.ceil(Math.max(0, ...values) / step) * step || step;
    let lo = Math.min(0, ...values);
    if (lo < 0 && -lo > step * 0.25) lo = Math.floor(lo / step) * step;  // a sliver below zero needs no tick of its own
    const y = (v) => m.t + ((hi - v) / (hi - lo)) * (height - m.t - m.b);
    const g = frame(width, height, `Mean predicted and mean actual value by decile of prediction, ${deciles.length} deciles`);
    for (let tick = Math.ceil(lo / step) * step; tick <= hi + step / 2; tick += step) {
      const v = Math.abs(tick) < step / 1e6 ? 0 : tick;  // never "-$0"
      g.append(svg("line", { class: Math.abs(v) < step / 1e6 ? "zero" : "grid-line", x1: m.l, x2: width - m.r, y1: y(v), y2: y(v) }));
      g.append(svg("text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end", class: "muted" }, MONEY_SHORT.format(v)));
    }
    const groupWidth = (width - m.l - m.r) / deciles.length;
    const barWidth = Math.min(groupWidth * 0.38, 24);
    deciles.forEach((d, i) => {
      const xc = m.l + groupWidth * (i + 0.5);
      const tip = `Decile ${d.decile} (${plural(d.customers, "customer", "customers")}): predicted ${money0(d.mean_predicted)}, actual ${money0(d.mean_actual)}`;
      for (const [kind, value, offset] of [["predicted", d.mean_predicted, -barWidth - 1], ["actual", d.mean_actual, 1]]) {
        if (!finite(value)) continue;
        g.append(svg("rect", { class: `bar ${kind}`, x: xc + offset, y: y(Math.max(value, 0)), width: barWidth, height: Math.max(Math.abs(y(value) - y(0)), 1) }, titled(tip)));
      }
      g.append(svg("text", { x: xc, y: height - m.b + 16, "text-anchor": "middle" }, String(d.decile)));
    });
    g.append(svg("text", { x: m.l + (width - m.l - m.r) / 2, y: height - 6, "text-anchor": "middle", class: "muted" }, "Decile of predicted value (1 = lowest)"));
    return g;
  };
}

function importanceChart(items) {
  return (width) => {
    const rowHeight = 40, top = 2;
    const height = top + items.length * rowHeight;
    const max = Math.max(...items.map((d) => d.importance + (d.std || 0)), 1e-9);
    const room = width - 64;
    const x = (v) => (Math.max(v, 0) / max) * room;
    const g = frame(width, height, `Global feature importance: ${items.map((d) => `${featureLabel(d.feature)} ${num(d.importance)}`).join(", ")}`);
    items.forEach((d, i) => {
      const yy = top + i * rowHeight;
      g.append(svg("text", { x: 0, y: yy + 13 }, featureLabel(d.feature)));
      g.append(svg("rect", { class: "bar importance", x: 0, y: yy + 18, width: Math.max(x(d.importance), 1), height: 14, rx: 2 },
        titled(`${featureLabel(d.feature)}: R² drops by ${num(d.importance)} (± ${num(d.std || 0)}) when shuffled`)));
      if (d.std) {
        const a = x(d.importance - d.std), b = x(d.importance + d.std), mid = yy + 25;
        g.append(svg("line", { class: "whisker", x1: a, x2: b, y1: mid, y2: mid }));
        g.append(svg("line", { class: "whisker", x1: b, x2: b, y1: mid - 4, y2: mid + 4 }));
      }
      g.append(svg("text", { x: Math.max(x(d.importance), x(d.importance + (d.std || 0))) + 6, y: yy + 30, class: "muted" }, num(d.importance)));
    });
    return g;
  };
}

/** Draw the card of `card` (GET /model) whole, its drift section empty (#drift-body: page.js has drift.js draw
 *  it). `change`: the version change this card brings, { from, to, at }, or null; `onRefresh()`: the drift's
 *  refresh button was pressed. Focus inside the card stays where it was. */
export function renderCard(card, { change = null, onRefresh }) {
  const rows = card.rows || {};
  const params = card.params || {};
  const facts = [
    ["Version", card.version],
    ["Trained", `${fmtDateTime(card.trained_at)}${finite(card.seconds) ? ` in ${card.seconds.toFixed(1)} s` : ""}`],
    ["Data", `${card.data_dir || "—"}, up to ${fmtDate(card.data_last_date)}`],
    ["Cutoffs", `${(rows.cutoffs || [card.cutoff]).filter(Boolean).map(fmtDate).join(", ")}: features known then, value over the next ${plural(card.horizon_months, "month", "months")}`],
    ["Customers", finite(rows.train) ? `${PLAIN.format(rows.train)} training rows, ${PLAIN.format(rows.test)} held-out customers` : "—"],
    ["Value", `discounted net margin at ${pct(card.discount_rate, 0)} a year; ${Math.round((card.interval_level || 0.8) * 100)}% intervals`],
    ["Estimator", Object.keys(params).length ? ["target", "n_estimators", "max_depth", "learning_rate"].filter((k) => k in params).map((k) => `${k.replace(/_/g, " ")} ${params[k]}`).join(", ") : "—"],
  ];
  const deciles = (card.deciles || []).filter((d) => d && finite(d.mean_predicted));
  const importance = (card.importance || []).filter((d) => d && finite(d.importance)).slice(0, 10);
  const decileBox = el("div", { class: "chart", id: "decile-chart" });
  const importanceBox = el("div", { class: "chart", id: "importance-chart" });
  const focused = document.activeElement && $("#card-body").contains(document.activeElement) ? document.activeElement.id : null;
  fill($("#card-body"),
    card.synthetic_data ? el("p", { class: "badge", id: "card-synthetic" }, `${SYNTHETIC_WORDS}: its metrics describe the generator's bank.`) : null,
    change ? el("p", { class: "notice", id: "version-note" }, `Updated at ${TIME.format(change.at)} UTC: model ${change.to} has taken over from ${change.from}, without a restart of the service.`) : null,
    el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))])),
    el("h3", {}, "Held-out metrics against the baselines"),
    comparison(card),
    metricsTable(card),
    el("p", { class: "muted small" }, "Bold: the best of the model and the baselines on each row. The oracle uses the generator's knowledge of each customer's future, so no model can beat it."),
    churnSection(card),
    horizonsCard(card),
    el("div", { class: "card-grid" },
      el("div", {},
        el("h3", {}, "Predicted against actual, by decile"),
        el("div", { class: "legend" },
          el("span", {}, el("span", { class: "swatch", style: "background: var(--up)" }), "mean predicted"),
          el("span", {}, el("span", { class: "swatch", style: "background: #2b3440" }), "mean actual")),
        deciles.length ? decileBox : el("p", { class: "muted" }, "No decile table in this model card."),
        deciles.length ? el("details", {}, el("summary", {}, "Deciles as a table"),
          el("div", { class: "table-wrap" }, el("table", {},
            el("thead", {}, el("tr", {}, ["Decile", "Customers", "Mean predicted", "Mean actual"].map((h) => el("th", { scope: "col" }, h)))),
            el("tbody", {}, deciles.map((d) => el("tr", {}, el("td", {}, String(d.decile)), el("td", {}, PLAIN.format(d.customers)), el("td", {}, money0(d.mean_predicted)), el("td", {}, money0(d.mean_actual)))))))) : null),
      el("div", {},
        el("h3", {}, `What the model relies on: top ${importance.length} features`),
        el("p", { class: "muted small" }, "How much R² drops on held-out customers when a feature is shuffled (line: ± one standard deviation)."),
        importance.length ? importanceBox : el("p", { class: "muted" }, "No importance in this model card."))),
    card.confidence_definition ? el("p", { class: "muted small" }, `Confidence score = ${card.confidence_definition}; scale ${money(card.confidence_scale)}.`) : null,
    el("section", { id: "drift", "aria-labelledby": "drift-title" },
      el("h3", { id: "drift-title" }, "Input drift: recent requests against the training data"),
      el("p", { class: "muted small" }, "PSI, the population stability index, measures how far the spread of a value among the customers scored lately has moved from its spread in the training rows: below 0.1 is stable, 0.1 to 0.25 a moderate shift, above 0.25 a significant one."),
      el("div", { class: "drift-tools" },
        el("button", { type: "button", id: "drift-refresh", onclick: onRefresh }, "Refresh the drift"),
        el("span", { class: "muted small", id: "drift-updated" })),
      el("div", { id: "drift-body" })));
  if (deciles.length) chart(decileBox, decileChart(deciles));
  if (importance.length) chart(importanceBox, importanceChart(importance));
  if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
}
