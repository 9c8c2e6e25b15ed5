// Input drift: GET /model's population stability of each feature, as a chart and table.
import { chart, clamp, frame, svg, titled } from "./chart.js";
import { $, announce, el, featureLabel, fill, finite, PLAIN, plural, TIME } from "./format.js";

// ---- input drift (GET /model's drift) ------------------------------------------------------------
const MIN_DRIFT_ROWS = 50;  // the service measures drift once it has scored this many customers (clv/service/telemetry.py)
const DRIFT_TOP = 8;  // features drawn; the table in the details lists them all

const psiText = (x) => (finite(x) ? x.toFixed(3) : "—");
function psiBand(value, t) {
  return value > t.significant ? "significant" : value >= t.moderate ? "moderate" : "stable";
}

/** Draw GET /model's drift into the card's #drift-body; `aloud`: also announce what it shows (its refresh button
 *  was pressed). */
export function renderDrift(drift, { aloud = false } = {}) {
  const box = $("#drift-body");
  if (!box) return;
  $("#drift-updated").textContent = `Read at ${TIME.format(new Date())} UTC.`;
  if (!drift || typeof drift !== "object") {
    box.replaceChildren(el("p", { class: "muted", id: "drift-none" }, `Not enough recent requests yet: the service compares them with the training data once it has scored ${MIN_DRIFT_ROWS} customers.`));
    if (aloud) announce("Not enough recent requests yet to measure input drift.");
    return;
  }
  const t = { moderate: 0.1, significant: 0.25, ...(drift.thresholds || {}) };
  const features = Object.entries(drift.features || {}).filter(([, v]) => finite(v)).sort((a, b) => b[1] - a[1]);
  const bands = features.map(([, v]) => psiBand(v, t));
  const moved = bands.filter((b) => b !== "stable").length;
  const significant = bands.filter((b) => b === "significant").length;
  const movedText = !features.length ? "none measured"
    : moved ? `${PLAIN.format(moved)} of ${PLAIN.format(features.length)} have moved: ${PLAIN.format(significant)} significantly, ${PLAIN.format(moved - significant)} moderately`
      : `all ${PLAIN.format(features.length)} stable`;
  const prediction = finite(drift.prediction) ? `PSI ${psiText(drift.prediction)}, ${psiBand(drift.prediction, t)}` : "not measured";
  const top = features.slice(0, DRIFT_TOP);
  const chartBox = el("div", { class: "chart", id: "drift-chart" });
  fill(box, el("div", { class: "card-grid" },
    el("div", {},
      el("dl", { class: "facts", id: "drift-facts" },
        el("dt", {}, "Covers"), el("dd", { id: "drift-rows" }, `the ${plural(drift.rows, "customer", "customers")} scored most recently`),
        el("dt", {}, "Predicted values"), el("dd", { id: "drift-prediction" }, prediction),
        el("dt", {}, "Features"), el("dd", {}, movedText)),
      features.length ? el("details", {}, el("summary", {}, `All ${plural(features.length, "feature", "features")} as a table`),
        el("div", { class: "table-wrap" }, el("table", { id: "drift-table" },
          el("caption", { class: "sr-only" }, "PSI of each feature over the recent requests, most drifted first"),
          el("thead", {}, el("tr", {}, ["Feature", "PSI", "Band"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, features.map(([name, v], i) => el("tr", {}, el("td", {}, featureLabel(name)), el("td", {}, psiText(v)), el("td", { class: `band-${bands[i]}` }, bands[i]))))))) : null),
    top.length ? el("div", {},
      el("h3", { class: "drift-top" }, `The ${plural(top.length, "feature", "features")} that moved most`),
      el("div", { class: "legend" },
        el("span", {}, el("span", { class: "swatch", style: "background: var(--ok)" }), `stable, below ${t.moderate}`),
        el("span", {}, el("span", { class: "swatch", style: "background: #b36b00" }), `moderate, ${t.moderate} to ${t.significant}`),
        el("span", {}, el("span", { class: "swatch", style: "background: var(--bad)" }), `significant, above ${t.significant}`)),
      chartBox) : null));
  if (top.length) chart(chartBox, driftChart(top, t));
  if (aloud) announce(`Input drift over the ${plural(drift.rows, "customer", "customers")} scored most recently: ${movedText}.`);
}

/** Horizontal bars of PSI over the stable, moderate and significant zones. The scale ends at 1 at most: a PSI
 *  past it is far into "significant", its bar runs to the end and its number says how far. */
function driftChart(rows, t) {
  return (width) => {
    const rowHeight = 40, top = 2, axis = 20;
    const height = top + rows.length * rowHeight + axis;
    const max = clamp(Math.max(...rows.map(([, v]) => v)), t.significant + 0.05, 1);
    const room = width - 130;  // then a column with the number and its band
    const x = (v) => (clamp(v, 0, max) / max) * room;
    const g = frame(width, height, `Input drift, PSI by feature: ${rows.map(([name, v]) => `${featureLabel(name)} ${psiText(v)} ${psiBand(v, t)}`).join(", ")}`);
    const bottom = top + rows.length * rowHeight;
    rows.forEach((_, i) => {  // the three bands and their borders behind each bar
      const y = top + i * rowHeight + 18;
      for (const [zone, a, b] of [["stable", 0, t.moderate], ["moderate", t.moderate, t.significant], ["significant", t.significant, max]]) {
        g.append(svg("rect", { class: `zone ${zone}`, x: x(a), y, width: Math.max(x(b) - x(a), 0), height: 18 }));
      }
      for (const v of [t.moderate, t.significant]) g.append(svg("line", { class: "threshold", x1: x(v), x2: x(v), y1: y, y2: i === rows.length - 1 ? bottom : y + 22 }));
    });
    g.append(svg("line", { class: "axis", x1: 0, x2: room, y1: bottom, y2: bottom }));
    const taken = [];  // the ticks' labels, the thresholds' first: one that would touch a label placed is left out
    for (const [v, anchor] of [[t.moderate, "middle"], [t.significant, "middle"], [max, "end"], [0, "start"]]) {
      const label = String(Math.round(v * 100) / 100), wide = label.length * 7;
      const left = anchor === "start" ? x(v) : anchor === "end" ? x(v) - wide : x(v) - wide / 2;
      if (taken.some(([a, b]) => left < b + 3 && left + wide > a - 3)) continue;
      taken.push([left, left + wide]);
      g.append(svg("text", { x: x(v), y: bottom + 15, "text-anchor": anchor, class: "muted" }, label));
    }
    rows.forEach(([name, v], i) => {
      const yy = top + i * rowHeight, band = psiBand(v, t);
      g.append(svg("text", { x: 0, y: yy + 13 }, featureLabel(name)));
      g.append(svg("rect", { class: `bar psi ${band}`, x: 0, y: yy + 20, width: Math.max(x(v), 2), height: 14, rx: 2 },
        titled(`${featureLabel(name)}: PSI ${psiText(v)}, ${band}${v > max ? ` (past the end of the scale, ${max})` : ""}`)));
      g.append(svg("text", { x: room + 8, y: yy + 32 }, svg("tspan", { "font-weight": "600" }, psiText(v)), ` ${band}`));
    });
    return g;
  };
}
