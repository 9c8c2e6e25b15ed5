// The Portfolio view: the latest scoring run's GET /portfolio, drawn by the page itself (no library, no network
// beyond the service): the horizons' totals, the concentration curve, value and value at risk by segment, and
// the at-risk list, sortable as a whole, shown 20 rows at a time, a row opening that customer's drivers.
import { getPortfolio, trouble } from "./api.js";
import { chart, frame, svg, titled } from "./chart.js";
import { $, announce, el, featureLabel, fill, fmtDate, fmtDateTime, MONEY_SHORT, money, PLAIN, pct, plural } from "./format.js";

const KINDS = {
  region: "Region", acquisition_channel: "Acquisition channel", age_band: "Age", income_band: "Income",
  tenure_band: "Joined in", product_mix: "Products held",
};
const PAGE = 20; // the at-risk list shows this many rows, and this many more at each press of its button
// shown: how many rows of the at-risk list show; open: the customer whose drivers show
const view = { data: null, kind: "region", sort: { key: "value_at_risk", descending: true }, shown: PAGE, open: null };

export async function loadPortfolio() {
  fill($("#portfolio-body"), el("p", { class: "muted" }, "Loading the portfolio…"));
  const reply = await getPortfolio();
  if (reply.status === 0) {
    fill($("#portfolio-body"), el("p", { class: "notice", id: "portfolio-missing" }, "The service could not be reached. Try again."));
    return;
  }
  if (reply.status === 401 || reply.status === 403) {
    const problem = trouble(reply);
    const words = reply.status === 403 ? "The portfolio needs a key with the scope clv:portfolio, and the one this tab signed in with lacks it. Sign in with a key that has it, or ask whoever gives out keys for one." : problem.body;
    fill($("#portfolio-body"), el("p", { class: "notice", id: "portfolio-missing" }, `${problem.title} ${words}`));
    return;
  }
  if (!reply.ok || !reply.data) {
    const why = typeof reply.data?.detail === "string" ? reply.data.detail : `the service answered ${reply.status}`;
    fill($("#portfolio-body"), el("p", { class: "notice", id: "portfolio-missing" }, `No portfolio to show: ${why}.`));
    return;
  }
  view.data = reply.data;
  view.shown = PAGE;
  render();
}

function render() {
  const p = view.data;
  const concentrationBox = el("div", { class: "chart", id: "concentration-chart" });
  const segmentBox = el("div", { class: "chart", id: "segment-chart" });
  const headline = p.horizons[0];
  const top = p.deciles[0];
  const select = el("select", { id: "segment-kind", "aria-label": "Kind of segment" },
    Object.entries(KINDS).filter(([key]) => p.segments[key]).map(([key, name]) => el("option", { value: key, selected: key === view.kind ? "" : null }, name)));
  select.addEventListener("change", () => { view.kind = select.value; chart(segmentBox, segmentChart(p.segments[view.kind])); fill($("#segment-table-body"), segmentRows(p.segments[view.kind])); });
  fill($("#portfolio-body"),
    el("p", { id: "portfolio-run" }, `${PLAIN.format(p.customers)} customers as of ${fmtDate(p.as_of)}, scored ${fmtDateTime(p.scored_at)} by model ${p.model_version} (run ${p.run}).`),
    el("h3", {}, "What the bank is worth"),
    el("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Totals by horizon, scrollable" },
      el("table", { id: "portfolio-horizons" },
        el("thead", {}, el("tr", {}, ["Horizon", "Total", `${Math.round(p.interval_level * 100)}% interval of the total`].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, p.horizons.map((h) => el("tr", {}, el("td", {}, plural(h.months, "month", "months")), el("td", { class: "num" }, money(h.total)), el("td", { class: "num range" }, `${money(h.low)} to ${money(h.high)}`)))))),
    el("p", { class: "muted small", title: p.interval_method }, "The interval is the sum's own, not the customers' intervals added: their independent errors shrink as the bank grows; the model's error on a whole bank, measured on held-out customers, does not."),
    el("p", { id: "portfolio-var" }, el("strong", {}, money(p.value_at_risk)), ` of the ${plural(headline.months, "month", "months")} value sits with customers likely to leave (value at risk: max(CLV, 0) × churn probability, summed). High risk is not the same as persuadable: who an offer would keep is another model.`),
    el("h3", {}, "Concentration"),
    el("p", { id: "portfolio-top" }, `The top tenth of customers holds ${pct(top.share)} of the value.`),
    concentrationBox,
    el("details", {}, el("summary", {}, "Deciles as a table"),
      el("div", { class: "table-wrap" }, el("table", { id: "portfolio-deciles" },
        el("thead", {}, el("tr", {}, ["Decile", "Customers", "Value", "Share"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, p.deciles.map((d) => el("tr", {}, el("td", {}, String(d.decile)), el("td", {}, PLAIN.format(d.customers)), el("td", { class: "num" }, money(d.value)), el("td", {}, pct(d.share)))))))),
    el("h3", {}, "By segment"),
    el("label", { class: "inline" }, "Segments by ", select),
    el("div", { class: "legend" },
      el("span", {}, el("span", { class: "swatch", style: "background: var(--up)" }), "value"),
      el("span", {}, el("span", { class: "swatch", style: "background: var(--down)" }), "value at risk")),
    segmentBox,
    el("details", {}, el("summary", {}, "Segments as a table"),
      el("div", { class: "table-wrap" }, el("table", { id: "segment-table", class: "stack" },
        el("thead", {}, el("tr", {}, SEGMENT_COLUMNS.map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", { id: "segment-table-body" }, segmentRows(p.segments[view.kind]))))),
    el("h3", {}, `Most value at risk: the top ${p.at_risk.length}`),
    el("p", { class: "muted small" }, "Sort by a column's heading (the whole list, not only the rows shown); a row opens the customer's drivers."),
    el("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Customers most at risk, scrollable" },
      el("table", { id: "at-risk-table", class: "stack sortable" }, el("thead", {}), el("tbody", {}))),
    el("div", { class: "group-foot", id: "at-risk-foot" }));
  drawAtRisk();
  chart(concentrationBox, concentrationChart(p.deciles));
  chart(segmentBox, segmentChart(p.segments[view.kind]));
}

const SEGMENT_COLUMNS = ["Segment", "Customers", "Value", "Value at risk", "Churn rate", "Mean CLV"];
function segmentRows(rows) {
  const [, customers, value, atRisk, churn, mean] = SEGMENT_COLUMNS;
  return rows.map((r) => el("tr", {}, el("td", {}, r.segment), el("td", { "data-label": customers }, PLAIN.format(r.customers)),
    el("td", { class: "num", "data-label": value }, money(r.value)), el("td", { class: "num", "data-label": atRisk }, money(r.value_at_risk)),
    el("td", { "data-label": churn }, r.churn_rate === null ? "—" : pct(r.churn_rate)), el("td", { class: "num", "data-label": mean }, money(r.mean_clv))));
}

// the at-risk list's columns: what sorts them, their heading, their cells' class and text
const COLUMNS = [
  ["customer_id", "Customer", null, (r) => String(r.customer_id)],
  ["clv", "CLV", "num", (r) => money(r.clv)],
  ["churn_probability", "Churn probability", null, (r) => pct(r.churn_probability)],
  ["value_at_risk", "Value at risk", "num", (r) => money(r.value_at_risk)],
  ["driver", "Main driver", "words", (r) => (r.driver ? featureLabel(r.driver) : "—")],
];

function atRiskHead() {
  return el("tr", {}, COLUMNS.map(([key, name, kind]) => {
    const sorted = view.sort.key === key;
    const button = el("button", { type: "button", class: "sort", "data-sort": key }, name, sorted ? (view.sort.descending ? " ▼" : " ▲") : "");
    button.addEventListener("click", () => {
      view.sort = { key, descending: sorted ? !view.sort.descending : key !== "customer_id" && key !== "driver" };
      drawAtRisk();
      $(`#at-risk-table [data-sort=${key}]`).focus();
    });
    return el("th", { scope: "col", class: kind, "aria-sort": sorted ? (view.sort.descending ? "descending" : "ascending") : "none" }, button);
  }));
}

/** The at-risk list: the whole list sorted, its first `view.shown` rows drawn, and the buttons that show more. */
function drawAtRisk() {
  fill($("#at-risk-table thead"), atRiskHead());
  fill($("#at-risk-table tbody"), atRiskRows());
  const total = view.data.at_risk.length;
  const shown = Math.min(view.shown, total);
  const left = total - shown;
  fill($("#at-risk-foot"),
    el("span", { class: "muted small", id: "at-risk-count" }, `Showing ${PLAIN.format(shown)} of ${PLAIN.format(total)}.`),
    left ? el("button", { type: "button", id: "at-risk-more", onclick: () => showMore(PAGE) }, `Show ${PLAIN.format(Math.min(PAGE, left))} more`) : null,
    left > PAGE ? el("button", { type: "button", id: "at-risk-all", onclick: () => showMore(left) }, `Show all ${PLAIN.format(total)}`) : null);
}

/** Show `count` more rows; focus moves to the first of them, so a keyboard goes on where the list grew. */
function showMore(count) {
  const first = Math.min(view.shown, view.data.at_risk.length);
  view.shown = first + count;
  drawAtRisk();
  document.querySelectorAll("#at-risk-table tbody tr.opens")[first]?.focus();
  announce(`Showing ${PLAIN.format(Math.min(view.shown, view.data.at_risk.length))} of ${PLAIN.format(view.data.at_risk.length)} customers.`);
}

function atRiskRows() {
  const { key, descending } = view.sort;
  const rows = [...view.data.at_risk].sort((a, b) => {
    const order = typeof a[key] === "string" ? a[key].localeCompare(b[key]) : a[key] - b[key];
    return (descending ? -order : order) || a.customer_id - b.customer_id;
  });
  return rows.slice(0, view.shown).flatMap((r) => {
    const row = el("tr", { class: "opens", tabindex: "0", "data-customer": r.customer_id, "aria-expanded": String(view.open === r.customer_id) },
      COLUMNS.map(([, name, kind, text]) => el("td", { class: kind, "data-label": name }, text(r))));
    const toggle = () => {
      view.open = view.open === r.customer_id ? null : r.customer_id;
      fill($("#at-risk-table tbody"), atRiskRows());
      $(`#at-risk-table tr[data-customer="${r.customer_id}"]`).focus();
    };
    row.addEventListener("click", toggle);
    row.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); toggle(); } });
    if (view.open !== r.customer_id) return [row];
    const drivers = el("td", { colspan: COLUMNS.length, class: "drivers-cell" },
      el("ul", { class: "at-risk-drivers", id: `drivers-${r.customer_id}` }, r.drivers.map((d) => el("li", {}, `${featureLabel(d.feature)}: ${d.contribution >= 0 ? "+" : ""}${money(d.contribution)}`))));
    return [row, el("tr", { class: "drivers-row" }, drivers)];
  });
}

// The concentration (Lorenz) curve: the share of the value held by the top share of customers, decile by decile.
function concentrationChart(deciles) {
  const customers = deciles.reduce((s, d) => s + d.customers, 0) || 1;
  const points = [[0, 0]];
  let c = 0, v = 0;
  for (const d of deciles) { c += d.customers / customers; v += d.share || 0; points.push([c, v]); }
  return (width) => {
    const height = 230, left = 44, right = width - 12, top = 12, bottom = height - 34;
    const hi = Math.max(1, ...points.map((p) => p[1]));
    const x = (s) => left + s * (right - left), y = (s) => bottom - (s / hi) * (bottom - top);
    const g = frame(width, height, `The top tenth of customers holds ${pct(deciles[0].share)} of the value`);
    for (const s of [0, 0.25, 0.5, 0.75, 1]) {
      g.append(svg("line", { class: "grid-line", x1: left, x2: right, y1: y(s), y2: y(s) }));
      g.append(svg("text", { x: left - 6, y: y(s) + 4, "text-anchor": "end", class: "muted" }, pct(s, 0)));
      g.append(svg("text", { x: x(s), y: height - 14, "text-anchor": "middle", class: "muted" }, pct(s, 0)));
    }
    g.append(svg("text", { x: (left + right) / 2, y: height - 1, "text-anchor": "middle", class: "muted" }, "customers, highest value first"));
    g.append(svg("line", { class: "zero dashed", x1: x(0), y1: y(0), x2: x(1), y2: y(1) }, titled("equal shares")));
    g.append(svg("polyline", { class: "cumulative", fill: "none", points: points.map(([a, b]) => `${x(a)},${y(b)}`).join(" ") }, titled("share of the value")));
    points.slice(1).forEach(([a, b], i) => { g.append(svg("circle", { class: "mark", cx: x(a), cy: y(b), r: 3 }, titled(`top ${(i + 1) * 10}%: ${pct(b)} of the value`))); });
    return g;
  };
}

function segmentChart(rows) {
  return (width) => {
    const rowHeight = 44, top = 4;
    const height = top + rows.length * rowHeight;
    const values = rows.flatMap((r) => [r.value, r.value_at_risk]);
    const lo = Math.min(0, ...values), hi = Math.max(0, ...values) || 1;
    const left = 8, right = width - 70;
    const x = (v) => left + ((v - lo) / (hi - lo || 1)) * (right - left);
    const g = frame(width, height, `Value and value at risk by ${KINDS[view.kind] || view.kind}`);
    rows.forEach((r, i) => {
      const y0 = top + i * rowHeight;
      g.append(svg("text", { x: 0, y: y0 + 12 }, `${r.segment} · ${PLAIN.format(r.customers)}`));
      for (const [j, key, kind] of [[0, "value", "up"], [1, "value_at_risk", "down"]]) {
        const v = r[key], a = x(0), b = x(v);
        g.append(svg("rect", { class: `bar ${kind}`, "data-segment": r.segment, "data-key": key, x: Math.min(a, b), y: y0 + 17 + j * 12, width: Math.max(Math.abs(b - a), 1), height: 10 },
          titled(`${r.segment}: ${key === "value" ? "value" : "value at risk"} ${money(v)}`)));
        g.append(svg("text", { x: Math.max(a, b) + 4, y: y0 + 26 + j * 12, class: "muted small-text" }, MONEY_SHORT.format(v)));
      }
    });
    return g;
  };
}
