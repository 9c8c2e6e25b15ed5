// The answer: the interval chart, the drivers and the rest of a prediction; and marking it stale or made by a
// model that no longer serves.
import { chart, clamp, frame, niceStep, svg, titled } from "./chart.js";
import { $, el, featureLabel, featureValue, fill, fmtDate, fmtDateTime, MONEY_SHORT, money, pct, plural, SYNTHETIC_WORDS, signedMoney } from "./format.js";
import { state } from "./state.js";

// ---- charts ---------------------------------------------------------------------------------

function intervalChart(r) {
  return (width) => {
    const { low, high } = r.clv_interval;
    const point = r.predicted_clv;
    let lo = Math.min(low, point), hi = Math.max(high, point);
    const span = Math.max(hi - lo, Math.abs(point) * 0.1, 1);
    if (lo > 0 && lo <= span * 0.5) lo = 0;  // show zero when it is near
    if (hi < 0 && -hi <= span * 0.5) hi = 0;
    const d0 = lo - span * 0.1, d1 = hi + span * 0.1;
    const left = 8, right = width - 8;
    const x = (v) => left + ((v - d0) / (d1 - d0)) * (right - left);
    const height = 92;
    const g = frame(width, height, `80% interval from ${money(low)} to ${money(high)}, predicted ${money(point)}`);
    g.append(svg("line", { class: "axis", x1: left, x2: right, y1: 52, y2: 52 }));
    if (d0 <= 0 && 0 <= d1) {
      g.append(svg("line", { class: "zero dashed", x1: x(0), x2: x(0), y1: 34, y2: 70 }, titled("zero")));
      const far = Math.abs(x(0) - x(low)) > 60 && Math.abs(x(0) - x(high)) > 60;
      if (far) g.append(svg("text", { x: x(0), y: 86, "text-anchor": "middle", class: "muted" }, "0"));
    }
    g.append(svg("rect", { class: "band", x: x(low), y: 40, width: Math.max(x(high) - x(low), 2), height: 24, rx: 3 },
      titled(`80% interval: ${money(low)} to ${money(high)}`)));
    g.append(svg("rect", { class: "point", x: x(point) - 2, y: 32, width: 4, height: 40 }, titled(`Predicted: ${money(point)}`)));
    g.append(svg("text", { x: clamp(x(point), 50, width - 50), y: 24, "text-anchor": "middle", "font-weight": "700" }, money(point)));
    g.append(svg("text", { x: Math.max(x(low), 0), y: 86, "text-anchor": "start", class: "muted" }, `low ${money(low)}`));
    g.append(svg("text", { x: Math.min(x(high), width), y: 86, "text-anchor": "end", class: "muted" }, `high ${money(high)}`));
    return g;
  };
}

function driversChart(r) {
  const rows = r.drivers.map((d) => ({
    label: featureLabel(d.feature), value: featureValue(d.feature, d.value), c: d.contribution,
    kind: d.contribution >= 0 ? "up" : "down",
  }));
  const rest = r.predicted_clv - r.drivers_base - rows.reduce((s, d) => s + d.c, 0);
  if (Math.abs(rest) >= 0.01) rows.push({ label: "All other features", value: null, c: Math.round(rest * 100) / 100, kind: "other" });
  return (width) => {
    const rowHeight = 46, top = 4;
    const height = top + rows.length * rowHeight;
    const lo = Math.min(0, ...rows.map((d) => d.c)), hi = Math.max(0, ...rows.map((d) => d.c));
    const room = (d) => signedMoney(d.c).length * 8 + 10;  // bold 13px digits are about 8px wide
    const left = Math.max(8, ...rows.filter((d) => d.c < 0).map(room)), right = width - Math.max(8, ...rows.filter((d) => d.c >= 0).map(room));
    const x = (v) => (hi === lo ? (left + right) / 2 : left + ((v - lo) / (hi - lo)) * (right - left));
    const g = frame(width, height, `Drivers: ${rows.map((d) => `${d.label} ${signedMoney(d.c)}`).join(", ")}`);
    rows.forEach((d, i) => {
      const y = top + i * rowHeight;
      g.append(svg("text", { x: 0, y: y + 13 }, d.label, d.value !== null ? svg("tspan", { class: "muted", fill: "#566170" }, ` · ${d.value}`) : null));
      const x0 = x(0), x1 = x(d.c);
      g.append(svg("line", { class: "zero", x1: x0, x2: x0, y1: y + 17, y2: y + 39 }));
      g.append(svg("rect", { class: `bar ${d.kind}`, x: Math.min(x0, x1), y: y + 20, width: Math.max(Math.abs(x1 - x0), 2), height: 16, rx: 2 },
        titled(`${d.label}: ${signedMoney(d.c)}`)));
      const after = d.c >= 0;
      g.append(svg("text", { x: after ? Math.max(x1, x0) + 6 : Math.min(x1, x0) - 6, y: y + 33, "text-anchor": after ? "start" : "end", "font-weight": "600" }, signedMoney(d.c)));
    });
    return g;
  };
}

// The curve: the discounted value so far (left axis, money) and P(still a customer) (right axis, 0-100%), month by
// month, with a mark at each horizon the answer carries.
function curveChart(r) {
  const points = r.curve;
  const marks = new Set((r.horizons || []).map((h) => h.months));
  return (width) => {
    const height = 220, left = 64, right = width - 44, top = 14, bottom = height - 34;
    const values = points.map((p) => p.cumulative_clv);
    let lo = Math.min(0, ...values), hi = Math.max(0, ...values);
    if (hi === lo) hi = lo + 1;
    const step = niceStep(hi - lo, 4);
    lo = Math.floor(lo / step) * step; hi = Math.ceil(hi / step) * step;
    const last = points.length;
    const x = (m) => left + ((m - 1) / Math.max(last - 1, 1)) * (right - left);
    const y = (v) => bottom - ((v - lo) / (hi - lo)) * (bottom - top);
    const ys = (s) => bottom - s * (bottom - top);
    const g = frame(width, height, `Value so far reaches ${money(values[last - 1])} at month ${last}; P(still a customer) falls to ${pct(points[last - 1].survival, 0)}`);
    for (let v = lo; v <= hi + step / 2; v += step) {
      g.append(svg("line", { class: "grid-line", x1: left, x2: right, y1: y(v), y2: y(v) }));
      g.append(svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "muted" }, MONEY_SHORT.format(v)));
    }
    for (const s of [0, 0.5, 1]) g.append(svg("text", { x: right + 6, y: ys(s) + 4, class: "muted" }, pct(s, 0)));
    g.append(svg("polyline", { class: "survival", fill: "none", points: points.map((p) => `${x(p.month)},${ys(p.survival)}`).join(" ") },
      titled("P(still a customer)")));
    g.append(svg("polyline", { class: "cumulative", fill: "none", points: points.map((p) => `${x(p.month)},${y(p.cumulative_clv)}`).join(" ") },
      titled("Discounted value so far")));
    for (const p of points) {
      if (!marks.has(p.month)) continue;
      g.append(svg("circle", { class: "mark", cx: x(p.month), cy: y(p.cumulative_clv), r: 4 }, titled(`${p.month} months: ${money(p.cumulative_clv)}`)));
      g.append(svg("text", { x: x(p.month), y: height - 8, "text-anchor": "middle", class: "muted" }, `${p.month} mo`));
    }
    return g;
  };
}

// ---- the answer -----------------------------------------------------------------------------
function confidenceWord(score) {
  return score >= 0.6 ? "high" : score >= 0.35 ? "moderate" : "low";
}

function churnLine(r) {
  const within = `within ${plural(r.churn_months, "month", "months")}`;
  if (r.churn_probability === null || r.churn_probability === undefined) {
    return el("p", { id: "clv-churn", class: "muted" }, `No churn probability: ${r.churn_reason || "none given"}.`);
  }
  return el("p", { id: "clv-churn" }, el("strong", {}, pct(r.churn_probability, 0)),
    ` chance of leaving ${within} of ${fmtDate(r.as_of)}: holding no open product then (for a purchase log, bringing no money in).`);
}

function horizonsSection(r, curveBox) {
  const horizons = r.horizons || [];
  if (horizons.length < 2 && !r.curve) return [];
  const judged = new Map((state.card?.horizons || []).map((h) => [h.months, h.judged]));
  const rows = horizons.map((h) => el("tr", {},
    el("td", { class: "nowrap" }, plural(h.months, "month", "months")),
    el("td", { class: "num range" }, money(h.clv), el("span", { class: "interval" }, el("span", { class: "sr-only" }, "interval "), `${money(h.low)} to ${money(h.high)}`)),
    el("td", { class: "words" }, judged.has(h.months) ? (judged.get(h.months) ? "judged on realized outcomes" : "extrapolated past the data") : "")));
  return [
    el("h3", {}, "Over the years"),
    el("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Value by horizon, scrollable" },
      el("table", { id: "horizons-table" },
        el("thead", {}, el("tr", {}, el("th", {}, "Horizon"), el("th", { class: "num" }, `Value and its ${Math.round((r.clv_interval.level || 0.8) * 100)}% interval`), el("th", { class: "words" }, "How far to trust it"))),
        el("tbody", {}, rows))),
    r.curve ? el("p", { class: "muted small" }, "Month by month: the discounted value so far (solid) and the chance the customer is still with the bank (dashed, right axis).") : null,
    r.curve ? curveBox : null,
  ];
}

export function renderResult(r, body) {
  state.result = r;
  $("#result-panel").classList.remove("stale");
  const { low, high, level } = r.clv_interval;
  const levelPct = Math.round((level || 0.8) * 100);
  const asOfNote = body.as_of ? "" : " (the model's default)";
  const intervalBox = el("div", { class: "chart", id: "interval-chart" });
  const driversBox = el("div", { class: "chart", id: "drivers-chart" });
  const curveBox = el("div", { class: "chart", id: "curve-chart" });
  const score = r.confidence_score;
  const definition = state.card?.confidence_definition;
  const drivers = r.drivers?.length
    ? [el("p", { class: "muted small" }, `The model starts from the average customer, ${money(r.drivers_base)}, and these features move this customer to ${money(r.predicted_clv)}.`),
      el("div", { class: "legend" },
        el("span", {}, el("span", { class: "swatch", style: "background: var(--up)" }), "raises the value"),
        el("span", {}, el("span", { class: "swatch", style: "background: var(--down)" }), "lowers the value"),
        el("span", {}, el("span", { class: "swatch", style: "background: var(--other)" }), "all other features")),
      driversBox]
    : [el("p", { class: "muted" }, "No drivers: the customer has no open product at the as-of date, so nothing further is expected.")];
  const synthetic = state.synthetic.has(r.model_version) ? state.synthetic.get(r.model_version) : Boolean(state.serving?.synthetic);
  fill($("#result"),
    el("p", { class: "stale-note notice" }, "The form has changed since this prediction. Press Predict CLV to update it."),
    el("p", { class: "older-note notice", id: "result-older", hidden: true }),
    synthetic ? el("p", { class: "badge", id: "result-synthetic" }, `${SYNTHETIC_WORDS}: this value is an illustration, not a real customer's.`) : null,
    el("div", { class: "answer" },
      el("p", { class: "kicker" }, `Customer ${r.customer_id} · predicted CLV`),
      el("p", { class: `big${r.predicted_clv < 0 ? " negative" : ""}`, id: "clv-value" }, money(r.predicted_clv)),
      el("p", {}, `Discounted net margin over the next ${plural(r.horizon_months, "month", "months")}, as of ${fmtDate(r.as_of)}${asOfNote}.`),
      el("h3", {}, `${levelPct}% interval`),
      el("p", { id: "clv-interval" }, `Between ${money(low)} and ${money(high)}: ${levelPct} in 100 customers like this one end up in this range.`),
      intervalBox,
      el("h3", {}, "Confidence"),
      el("p", { id: "clv-confidence" }, el("strong", {}, pct(score, 0)), ` · ${confidenceWord(score)}: the interval is ${money(high - low)} wide.`),
      el("div", { class: "meter", role: "img", "aria-label": `confidence ${pct(score, 0)}` }, el("span", { style: `width: ${clamp(score * 100, 0, 100)}%` })),
      definition ? el("p", { class: "muted small" }, `Confidence = ${definition}, with scale ${money(state.card.confidence_scale)}: it falls as the interval widens relative to the prediction.`) : null,
      el("h3", {}, "Churn"),
      churnLine(r),
      ...horizonsSection(r, curveBox),
      el("h3", {}, "Why: the biggest drivers"),
      ...drivers,
      el("p", { class: "meta", id: "clv-model" }, `Model ${r.model_version}`, el("span", { id: "clv-model-older" }), ` · scored ${fmtDateTime(r.prediction_timestamp)}`),
      el("details", {}, el("summary", {}, "Response as JSON"), el("pre", {}, JSON.stringify(r, null, 2)))));
  chart(intervalBox, intervalChart(r));
  if (r.drivers?.length) chart(driversBox, driversChart(r));
  if (r.curve) chart(curveBox, curveChart(r));
  markOlderResult();
}

/** Show something in place of a prediction (why there is none); no prediction is shown after it. */
export function clearResult(...kids) {
  state.result = null;
  $("#result-panel").classList.remove("stale", "older");
  fill($("#result"), ...kids);
}

/** The customer in the form changed: a prediction shown says it is of the customer as it was. */
export function markStale() {
  if (state.result) $("#result-panel").classList.add("stale");
}

/** A prediction shown that the model serving now did not make says so. */
export function markOlderResult() {
  const note = $("#result-older");
  if (!note || !state.result) return;
  const made = state.result.model_version;
  const now = state.serving?.version;
  const older = Boolean(now && made && made !== now);
  $("#result-panel").classList.toggle("older", older);
  note.hidden = !older;
  note.textContent = older ? `Made by model ${made}, which no longer serves: model ${now} does now. Press Predict CLV to score this customer with it.` : "";
  $("#clv-model-older").textContent = older ? " · an older model" : "";
}
