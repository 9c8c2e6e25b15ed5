// The page: the form built from /openapi.json, the prediction, the model card and its drift.
import { chart, clamp, frame, niceStep, svg, titled } from "./chart.js";

// ---- the contract: read from the service's own OpenAPI document, GET /openapi.json --------------
// Only the request-body limit is not in the document (a setting of the service, CLV_MAX_BODY_BYTES):
// the page checks against its default, and the service answers 413 if it is set lower.
const BODY_BYTES = 2 * 1024 * 1024;
const DATE_FORMAT = /^date(-time)?$/;

/** What the page needs of the body of POST /predict/clv, read from the OpenAPI document: the fields of the
 *  customer, of a product and of a transaction (kind, options, min, max, default, required), the lists'
 *  maxItems and the example request. `$ref`s are followed; in an anyOf/oneOf, null means "may be left out"
 *  and a choice of date and date-time strings is a date. Throws, naming the place, on what it cannot read. */
function readContract(doc) {
  const schemas = (doc && doc.components && doc.components.schemas) || {};
  const plain = (node, where) => {
    for (let hops = 0; node && node.$ref; hops++) {
      const m = /^#\/components\/schemas\/(.+)$/.exec(node.$ref);
      if (!m || !schemas[m[1]] || hops > 20) throw new Error(`${where}: cannot resolve ${node.$ref}`);
      const { $ref, ...beside } = node;
      node = { ...schemas[m[1]], ...beside };
    }
    if (!node || typeof node !== "object") throw new Error(`${where}: no schema`);
    const choices = node.anyOf || node.oneOf;
    if (!choices) return node;
    const { anyOf, oneOf, ...beside } = node;
    const kept = choices.map((c) => plain(c, where)).filter((c) => c.type !== "null");
    if (kept.length === 1) return { ...kept[0], ...beside };
    if (kept.length && kept.every((c) => c.type === "string" && DATE_FORMAT.test(c.format))) return { type: "string", format: "date", ...beside };
    throw new Error(`${where}: cannot read a choice of ${kept.map((c) => c.type || "?").join(" or ")}`);
  };
  const read = (node, where) => {
    const schema = plain(node, where);
    if (!schema.properties) throw new Error(`${where}: no properties`);
    const required = new Set(schema.required || []);
    const fields = {}, lists = {};
    for (const [key, property] of Object.entries(schema.properties)) {
      const s = plain(property, `${where}.${key}`);
      const field = { key, title: s.title || key, description: s.description, required: required.has(key), default: s.default };
      if (Array.isArray(s.enum)) Object.assign(field, { kind: "enum", options: s.enum.map(String) });
      else if (s.type === "integer" || s.type === "number") Object.assign(field, { kind: s.type === "integer" ? "int" : "number", min: s.minimum, max: s.maximum });
      else if (s.type === "string") field.kind = DATE_FORMAT.test(s.format || "") ? "date" : "text";
      else if (s.type === "array") { lists[key] = { maxItems: s.maxItems ?? Infinity, items: s.items }; continue; }
      else if (field.required) throw new Error(`${where}.${key}: the form cannot hold a required ${s.type || "value"}`);
      else continue;
      fields[key] = field;
    }
    return { schema, fields, lists };
  };
  const post = doc && doc.paths && doc.paths["/predict/clv"] && doc.paths["/predict/clv"].post;
  const body = (post && post.requestBody && post.requestBody.content && post.requestBody.content["application/json"] || {}).schema
    || { $ref: "#/components/schemas/CustomerIn" };
  const customer = read(body, "customer");
  const list = (name) => {
    if (!customer.lists[name]) throw new Error(`customer: no list of ${name}`);
    return customer.lists[name];
  };
  const examples = customer.schema.examples;
  return {
    customer: customer.fields,
    product: read(list("products").items, "product").fields,
    transaction: read(list("transactions").items, "transaction").fields,
    limits: { products: list("products").maxItems, transactions: list("transactions").maxItems, ledger: (customer.lists.ledger || {}).maxItems ?? Infinity },
    example: (Array.isArray(examples) ? examples[0] : customer.schema.example) || null,
  };
}

// ---- the form's presentation: order, labels, hints, which dates the as-of date bounds --------
// Kinds, options, bounds and required come from the contract; a field it has and these lists lack is shown
// after them under its own title, and one they name that it lacks is left out.
const range = (f) => (finite(f.min) && finite(f.max) ? `${PLAIN.format(f.min)} to ${PLAIN.format(f.max)}` : null);
const CUSTOMER_FIELDS = [
  { key: "customer_id", label: "Customer ID" },
  { key: "age", label: "Age", hint: range },
  { key: "income", label: "Annual income" },
  { key: "credit_score", label: "Credit score", hint: range },
  { key: "tenure_months", label: "Tenure (months)", hint: "Months with the bank" },
  { key: "region", label: "Region" },
  { key: "acquisition_channel", label: "Acquisition channel" },
  { key: "join_date", label: "Join date", asOf: true, hint: "When known, tenure counts from it" },
  { key: "as_of", label: "As-of date", hint: "Empty: the model's last data date" },
];
const PRODUCT_FIELDS = [  // `initial`: the value of a new row, when the contract has no default
  { key: "product_type", label: "Type", initial: "Savings" },
  { key: "status", label: "Status" },
  { key: "start_date", label: "Start date", asOf: true },
  { key: "end_date", label: "End date", asOf: true },
  { key: "balance", label: "Balance" },
  { key: "credit_limit", label: "Credit limit" },
  { key: "interest_rate", label: "Interest rate (%)" },
];
const TRANSACTION_FIELDS = [
  { key: "transaction_date", label: "Date", asOf: true },
  { key: "amount", label: "Amount" },
  { key: "transaction_type", label: "Type", initial: "Deposit" },
  { key: "channel", label: "Channel", initial: "Online" },
];

/** The contract's fields in the page's order and words. */
function formFields(presentation, fields) {
  const shown = presentation.filter((p) => fields[p.key]).map((p) => {
    const field = fields[p.key];
    return { ...field, label: p.label, asOf: p.asOf, initial: p.initial, hint: typeof p.hint === "function" ? p.hint(field) : p.hint };
  });
  const extra = Object.values(fields).filter((f) => !presentation.some((p) => p.key === f.key)).map((f) => ({ ...f, label: f.title, hint: f.description }));
  return [...shown, ...extra];
}

let CONTRACT = null;  // readContract(GET /openapi.json), once read
let FORM = null;  // { customer, product, transaction }: the fields as the form shows them

// ---- example customers ---------------------------------------------------------------------
const pad2 = (n) => String(n).padStart(2, "0");
/** One transaction a month in 2024 (months 1-12 unless given), amounts cycling through `amounts`. */
function monthly(day, type, amounts, channel, months = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]) {
  return months.map((m, i) => ({
    transaction_date: `2024-${pad2(m)}-${pad2(day)}`, transaction_type: type,
    amount: amounts[i % amounts.length], channel,
  }));
}
const byDate = (rows) => rows.sort((a, b) => a.transaction_date.localeCompare(b.transaction_date));
const PROFILES = {
  readme: { name: "Original example", note: "The README request of the original system, unchanged.", data: () => CONTRACT.example },  // the document's example
  new: {
    name: "New customer",
    note: "Joined online twelve days before the as-of date; no product opened and no transaction yet.",
    data: {
      customer_id: 50931, age: 24, income: 31000, credit_score: 655, tenure_months: 0, region: "West",
      acquisition_channel: "Online", join_date: "2024-12-19", as_of: "2024-12-31", products: [], transactions: [],
    },
  },
  saver: {
    name: "Steady saver",
    note: "Eight years with the bank: salary every month, bills paid, savings and an investment account growing.",
    data: {
      customer_id: 20417, age: 52, income: 68000, credit_score: 782, tenure_months: 97, region: "South",
      acquisition_channel: "Branch", join_date: "2016-11-14", as_of: "2024-12-31",
      products: [
        { product_type: "Checking", start_date: "2016-11-14", balance: 3240.55, status: "Active", interest_rate: 0.1 },
        { product_type: "Savings", start_date: "2017-02-01", balance: 28650, status: "Active", interest_rate: 3.25 },
        { product_type: "Investment", start_date: "2020-05-18", balance: 41200, status: "Active" },
      ],
      transactions: byDate([
        ...monthly(25, "Deposit", [4310], "Online"),
        ...monthly(5, "Bill Payment", [-182.4, -176.1, -169.85, -158.3, -149.9, -151.2, -163.75, -171.4, -160.05, -174.6, -188.2, -195.35], "Online"),
        ...monthly(26, "Transfer", [600], "Online"),
        ...monthly(12, "Withdrawal", [-200, -150, -250], "ATM", [2, 4, 6, 8, 10, 12]),
      ]),
    },
  },
  mortgage: {
    name: "Mortgage holder",
    note: "A family with a large mortgage, a credit card used every month, salary and savings with the bank.",
    data: {
      customer_id: 31088, age: 41, income: 118000, credit_score: 748, tenure_months: 61, region: "East",
      acquisition_channel: "Referral", join_date: "2019-11-08", as_of: "2024-12-31",
      products: [
        { product_type: "Checking", start_date: "2019-11-08", balance: 6820.4, status: "Active", interest_rate: 0.1 },
        { product_type: "Mortgage", start_date: "2020-02-14", balance: 312450, status: "Active", interest_rate: 3.45 },
        { product_type: "Credit Card", start_date: "2020-06-01", balance: 1460.25, status: "Active", credit_limit: 12000, interest_rate: 21.9 },
        { product_type: "Savings", start_date: "2021-03-01", balance: 14300, status: "Active", interest_rate: 3.1 },
      ],
      transactions: byDate([
        ...monthly(28, "Deposit", [7150], "Online"),
        ...monthly(1, "Loan Payment", [-1742.18], "Online"),
        ...monthly(9, "Card Purchase", [-86.4, -142.9, -64.15, -210.3, -98.75, -121.6], "Mobile"),
        ...monthly(16, "Bill Payment", [-1310.55, -1288.9, -1402.3, -1356.1], "Online"),
      ]),
    },
  },
  drifting: {
    name: "Drifting away",
    note: "Salary stopped arriving in May, savings moved out in June, the card closed in August; only fees since.",
    data: {
      customer_id: 44562, age: 34, income: 52000, credit_score: 641, tenure_months: 45, region: "North",
      acquisition_channel: "Marketing", join_date: "2021-03-19", as_of: "2024-12-31",
      products: [
        { product_type: "Checking", start_date: "2021-03-19", balance: 312.8, status: "Active", interest_rate: 0.1 },
        { product_type: "Savings", start_date: "2021-06-01", balance: 150, status: "Inactive", interest_rate: 2.9 },
        { product_type: "Credit Card", start_date: "2022-01-10", end_date: "2024-08-30", balance: 0, status: "Closed", credit_limit: 4000, interest_rate: 23.4 },
      ],
      transactions: byDate([
        ...monthly(27, "Deposit", [3210], "Branch", [1, 2, 3, 4]),
        ...monthly(14, "Card Purchase", [-64.2, -118.45, -39.9, -87.3], "Online", [1, 2, 3, 4]),
        ...monthly(20, "Withdrawal", [-400, -650, -900, -1200], "ATM", [2, 4, 5, 6]),
        { transaction_date: "2024-06-14", transaction_type: "Transfer", amount: -2400, channel: "Online" },
        { transaction_date: "2024-08-30", transaction_type: "Bill Payment", amount: -212.6, channel: "Online" },
        ...monthly(2, "Fee", [-8], "Online", [7, 8, 9]),
      ]),
    },
  },
};

// ---- small helpers -------------------------------------------------------------------------
const $ = (selector, root = document) => root.querySelector(selector);
function el(tag, attrs = {}, ...kids) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid !== null && kid !== undefined && kid !== false) node.append(kid instanceof Node ? kid : String(kid));
  }
  return node;
}
/** replaceChildren that, like el(), flattens lists and leaves out null, undefined and false. */
const fill = (node, ...kids) => node.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false));

const query = new URLSearchParams(location.search);
function moneyFormat(currency, digits) {
  return new Intl.NumberFormat("en-US", { style: "currency", currency, minimumFractionDigits: digits, maximumFractionDigits: digits });
}
let currency = (query.get("currency") || "USD").toUpperCase();
try { moneyFormat(currency, 2); } catch { currency = "USD"; }
const MONEY = moneyFormat(currency, 2);
const MONEY0 = moneyFormat(currency, 0);
const MONEY_SHORT = new Intl.NumberFormat("en-US", { style: "currency", currency, notation: "compact", maximumFractionDigits: 1 });
const PLAIN = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
const finite = (x) => typeof x === "number" && Number.isFinite(x);
const money = (x) => (finite(x) ? MONEY.format(x) : "—");
const money0 = (x) => (finite(x) ? MONEY0.format(x) : "—");
const signedMoney = (x) => (x >= 0 ? "+" : "\u2212") + MONEY.format(Math.abs(x));
const pct = (x, digits = 1) => (finite(x) ? (x * 100).toFixed(digits) + "%" : "—");
const num = (x, digits = 3) => (finite(x) ? x.toFixed(digits) : "—");
const DATE = new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", year: "numeric", timeZone: "UTC" });
const DATETIME = new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit", timeZone: "UTC" });
const TIME = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit", timeZone: "UTC" });
function fmtDate(iso) {
  const m = /^(\d{4})-(\d{2})-(\d{2})/.exec(String(iso || ""));
  return m ? DATE.format(new Date(Date.UTC(+m[1], +m[2] - 1, +m[3]))) : String(iso || "—");
}
function fmtDateTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso || "—") : DATETIME.format(d) + " UTC";
}
const plural = (n, one, many) => `${PLAIN.format(n)} ${n === 1 ? one : many}`;
function announce(text) {
  const live = $("#announce");
  live.textContent = "";
  setTimeout(() => { live.textContent = text; }, 30);
}

/** Text as a sentence: capital first letter, closing full stop. */
function sentence(text) {
  const t = String(text || "").trim();
  if (!t) return "";
  const capital = t.charAt(0).toUpperCase() + t.slice(1);
  return /[.!?]$/.test(capital) ? capital : capital + ".";
}

/** A message from any error body, always as words: never "[object Object]". */
function describe(data, text) {
  if (data === null || data === undefined) return (text || "").trim().slice(0, 300);
  if (typeof data === "string") return data;
  if (typeof data.detail === "string") return data.detail;
  if (Array.isArray(data.detail)) {
    return data.detail.map((d) => (d && typeof d === "object" ? `${d.field || (d.loc || []).join(".")}: ${d.msg || ""}` : String(d))).join("; ");
  }
  if (typeof data.error === "string") return data.error;
  if (typeof data.message === "string") return data.message;
  try { return JSON.stringify(data).slice(0, 300); } catch { return ""; }
}

// ---- feature names in words ------------------------------------------------------------------
const FEATURE_LABELS = {
  age: "Age", income: "Income", credit_score: "Credit score", tenure_months: "Tenure",
  open_products: "Open products", products_ever: "Products ever held",
  opened_3m: "Products opened, last 3 months", opened_12m: "Products opened, last 12 months",
  closed_3m: "Products closed, last 3 months", closed_12m: "Products closed, last 12 months",
  months_since_last_open: "Time since a product was last opened",
  deposits_balance: "Deposit balances", cards_balance: "Card balances", loans_balance: "Loan balances",
  investments_balance: "Investment balances", credit_limit: "Card credit limit", card_utilisation: "Card utilisation",
  recency_days: "Days since the last transaction", history_days: "Length of transaction history",
  active_months_12m: "Active months, last 12",
  branch_share_365d: "Share of transactions in a branch, last year",
  digital_share_365d: "Share of transactions online or mobile, last year",
  count_trend_90d: "Transaction count, last 90 days vs the 90 before",
  inflow_trend_90d: "Money in, last 90 days vs the 90 before",
  margin_last_month: "Net margin, last month", margin_3m: "Net margin, last 3 months",
  margin_prev_3m: "Net margin, the 3 months before", margin_12m: "Net margin, last 12 months",
  margin_std_12m: "Monthly margin swings, last 12 months", ledger_months_12m: "Ledger months, last 12",
  negative_months_12m: "Loss-making months, last 12", interest_margin_12m: "Interest margin, last 12 months",
  fee_income_12m: "Fee income, last 12 months", cost_to_serve_12m: "Cost to serve, last 12 months",
  credit_loss_12m: "Expected credit loss, last 12 months",
  deposits_balance_change_3m: "Change in deposits, last 3 months",
  investments_balance_change_3m: "Change in investments, last 3 months",
  loans_balance_change_12m: "Change in loans, last 12 months",
};
const TYPE_PLURALS = { Deposit: "Deposits", Withdrawal: "Withdrawals", Transfer: "Transfers", "Bill Payment": "Bill payments", "Card Purchase": "Card purchases", Fee: "Fees", "Loan Payment": "Loan payments" };
function featureLabel(name) {
  if (FEATURE_LABELS[name]) return FEATURE_LABELS[name];
  let m;
  if ((m = /^region_(.+)$/.exec(name))) return `Region is ${m[1]}`;
  if ((m = /^acquisition_(.+)$/.exec(name))) return `Came through ${m[1]}`;
  if ((m = /^open_(.+)$/.exec(name))) return `Open ${m[1].toLowerCase()} products`;
  if ((m = /^txn_count_(\d+)d$/.exec(name))) return `Transactions, last ${m[1]} days`;
  if ((m = /^inflow_(\d+)d$/.exec(name))) return `Money in, last ${m[1]} days`;
  if ((m = /^outflow_(\d+)d$/.exec(name))) return `Money out, last ${m[1]} days`;
  if ((m = /^count_90d_(.+)$/.exec(name))) return `${TYPE_PLURALS[m[1]] || m[1]}, last 90 days`;
  const words = String(name).replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}
function featureValue(name, value) {
  if (value === null || value === undefined || !finite(value)) return "unknown";
  if (/^(region|acquisition)_/.test(name)) return value >= 0.5 ? "yes" : "no";
  if (/(share|utilisation)/.test(name)) return pct(value, 0);
  if (/_trend_/.test(name)) return "\u00d7" + Math.exp(value).toFixed(2);
  if (/^(open_|products_ever|opened_|closed_|txn_count_|count_90d_)|months_12m$/.test(name)) return PLAIN.format(value);
  if (/^(income|credit_limit)$|balance|inflow|outflow|^margin_|_12m$|_change_/.test(name)) return money0(value);
  if (/_days$/.test(name)) return plural(Math.round(value), "day", "days");
  if (name === "tenure_months" || name === "months_since_last_open") return `${value.toFixed(1)} months`;
  if (name === "age") return `${PLAIN.format(value)} years`;
  return PLAIN.format(value);
}

// ---- the form ------------------------------------------------------------------------------
const form = $("#customer-form");
const productsEl = $("#products");
const transactionsEl = $("#transactions");
const state = {
  card: null, ledger: [], uid: 0, paths: new Map(), result: null, cardTimer: null, contractTimer: null,
  // the model that serves, from /health or /model, whichever answered last: { version, trained_at, synthetic }
  serving: null,
  synthetic: new Map(),  // model version -> trained on generated data (synthetic_data of /health and /model)
  shown: null,  // the version whose card #card-body shows; null while it shows why there is none
  versionChange: null,  // { from, to, at }: the last change of version this page saw
  healthTimer: null, refreshTimer: null, cardLoadedAt: 0, cardLoading: false, cardAgain: false,
  announceRefresh: false,  // the drift's refresh button was pressed: say what the card read brought
};

function makeField(spec, prefix) {
  const id = `${prefix}-${spec.key}`;
  const optional = !spec.required;
  const label = el("label", { for: id }, spec.label, optional ? el("span", { class: "opt" }, " (optional)") : null);
  let input;
  if (spec.options) {
    input = el("select", { id, name: spec.key });
    if (optional) input.append(el("option", { value: "" }, "(not given)"));
    for (const option of spec.options) input.append(el("option", { value: option }, option));
    input.dataset.kind = "enum";
  } else if (spec.kind === "date") {
    input = el("input", { id, name: spec.key, type: "date" });
    input.dataset.kind = "date";
  } else if (spec.kind === "text") {
    input = el("input", { id, name: spec.key, type: "text" });
    input.dataset.kind = "text";
  } else {
    input = el("input", {
      id, name: spec.key, type: "number", inputmode: spec.kind === "int" ? "numeric" : "decimal",
      step: spec.kind === "int" ? "1" : "any", min: spec.min, max: spec.max,
    });
    input.dataset.kind = spec.kind;
  }
  input.dataset.key = spec.key;
  input.dataset.label = spec.label;
  if (spec.required) input.required = true;
  if (spec.asOf) input.dataset.asOf = "1";
  const hint = spec.hint ? el("p", { class: "hint", id: `${id}-hint` }, spec.hint) : null;
  const error = el("p", { class: "error", id: `${id}-err`, hidden: true });
  input.setAttribute("aria-describedby", [hint ? hint.id : null, error.id].filter(Boolean).join(" "));
  return el("div", { class: `field f-${spec.key}` }, label, input, hint, error);
}

const customerBox = $("#customer-fields");
const customerInput = (key) => $(`#c-${key}`);

function setValue(input, value) {
  if (value === null || value === undefined) { input.value = ""; return; }
  if (input.dataset.kind === "date") {
    const m = /^\d{4}-\d{2}-\d{2}/.exec(String(value));
    input.value = m ? m[0] : "";
  } else {
    input.value = String(value);
  }
}

function addRow(kind, data, { focus = true } = {}) {
  const list = kind === "product" ? productsEl : transactionsEl;
  const specs = FORM[kind];
  const prefix = `${kind[0]}${++state.uid}`;
  const title = el("span", { class: "row-title" });
  const remove = el("button", { type: "button", class: "remove" }, "Remove");
  const fields = el("div", { class: "row-fields" }, specs.map((spec) => makeField(spec, prefix)));
  const row = el("div", { class: "row", "data-kind": kind },
    el("div", { class: "row-head" }, title, remove), fields,
    el("p", { class: "error row-error", hidden: true }));
  for (const spec of specs) setValue($(`#${prefix}-${spec.key}`, row), data ? data[spec.key] : spec.default ?? spec.initial);
  remove.addEventListener("click", () => removeRow(row));
  list.append(row);
  if (focus) {
    renumber();
    syncDateBounds();
    row.querySelector("select, input").focus();
    announce(`${kind === "product" ? "Product" : "Transaction"} ${list.children.length} added.`);
    markStale();
  }
  return row;
}

function removeRow(row) {
  const list = row.parentElement;
  const rows = [...list.children];
  const index = rows.indexOf(row);
  const kind = row.dataset.kind;
  row.remove();
  renumber();
  const left = [...list.children];
  const next = left[index] || left[index - 1];
  (next ? $(".remove", next) : $(kind === "product" ? "#add-product" : "#add-transaction")).focus();
  announce(`${kind === "product" ? "Product" : "Transaction"} ${index + 1} removed; ${kind === "product" ? plural(left.length, "product", "products") : plural(left.length, "transaction", "transactions")} left.`);
  markStale();
}

function renumber() {
  for (const [list, word, limit, button] of [[productsEl, "Product", CONTRACT.limits.products, "#add-product"], [transactionsEl, "Transaction", CONTRACT.limits.transactions, "#add-transaction"]]) {
    const rows = [...list.children];
    rows.forEach((row, i) => {
      $(".row-title", row).textContent = `${word} ${i + 1}`;
      $(".remove", row).setAttribute("aria-label", `Remove ${word.toLowerCase()} ${i + 1}`);
    });
    const count = $(`#${word.toLowerCase()}s-count`);
    count.textContent = `· ${PLAIN.format(rows.length)}${finite(limit) ? ` of at most ${PLAIN.format(limit)}` : ""}`;
    $(button).disabled = rows.length >= limit;
    let empty = $(".empty", list.parentElement);
    if (!rows.length && !empty) list.before(el("p", { class: "empty" }, word === "Product" ? "No products: nothing is open with the bank." : "No transactions yet."));
    if (rows.length && empty) empty.remove();
  }
  summarizeTransactions();
}

function summarizeTransactions() {
  const rows = [...transactionsEl.children];
  const dates = [], amounts = [];
  for (const row of rows) {
    const d = $('[data-key="transaction_date"]', row).value;
    const a = Number($('[data-key="amount"]', row).value);
    if (d) dates.push(d);
    if ($('[data-key="amount"]', row).value !== "" && Number.isFinite(a)) amounts.push(a);
  }
  if (!rows.length) { $("#transactions-summary").textContent = ""; return; }
  dates.sort();
  const inflow = amounts.filter((a) => a > 0).reduce((s, a) => s + a, 0);
  const outflow = amounts.filter((a) => a < 0).reduce((s, a) => s - a, 0);
  const first = dates[0], last = dates[dates.length - 1];
  const span = !dates.length ? "" : first === last ? `on ${fmtDate(first)}; ` : `${fmtDate(first)} to ${fmtDate(last)}; `;
  $("#transactions-summary").textContent = `${span}in ${money0(inflow)}, out ${money0(outflow)}`;
}

function effectiveAsOf() {
  const given = customerInput("as_of") ? customerInput("as_of").value : "";
  if (/^\d{4}-\d{2}-\d{2}$/.test(given)) return given;
  return state.card && state.card.data_last_date ? state.card.data_last_date : null;
}

/** Dates may not lie after the as-of date: the date inputs carry it as their max. */
function syncDateBounds() {
  const asOf = effectiveAsOf();
  for (const input of form.querySelectorAll("input[data-as-of]")) {
    if (asOf) input.setAttribute("max", asOf); else input.removeAttribute("max");
  }
}

function renderLedger() {
  const note = $("#ledger-note");
  if (!state.ledger.length) { note.hidden = true; note.replaceChildren(); return; }
  note.hidden = false;
  note.replaceChildren(
    el("p", {}, `Profit ledger: ${plural(state.ledger.length, "month", "months")} from the pasted JSON will be sent with the customer. `,
      el("button", { type: "button", class: "link", onclick: () => { state.ledger = []; renderLedger(); markStale(); } }, "Remove the ledger")),
    el("p", { class: "error", id: "ledger-err", hidden: true }));
}

/** Values outside the contract's enumerations are refused, naming where: "products[0].status". */
function checkEnums(item, specs, where) {
  for (const spec of specs) {
    const value = item[spec.key];
    if (!spec.options || value === null || value === undefined || value === "") continue;
    if (!spec.options.includes(value)) throw new Error(`${where}${spec.key}: "${value}" is not one of ${spec.options.join(", ")}`);
  }
}

/** The contract's defaults for what an item leaves out: what the service would assume. */
const withDefaults = (item, specs) => ({ ...Object.fromEntries(specs.filter((s) => s.default !== undefined && s.default !== null).map((s) => [s.key, s.default])), ...item });

/** Fill the form from a request body (an example or pasted JSON); rows are replaced, never added twice. */
function loadCustomer(data) {
  if (!data || typeof data !== "object" || Array.isArray(data)) throw new Error("the JSON must be one customer object, like {\"customer_id\": 1, ...}");
  const products = data.products ?? [];
  const transactions = data.transactions ?? [];
  const ledger = data.ledger ?? [];
  for (const [name, list] of [["products", products], ["transactions", transactions], ["ledger", ledger]]) {
    const limit = CONTRACT.limits[name];
    if (!Array.isArray(list)) throw new Error(`${name} must be a list`);
    if (list.length > limit) throw new Error(`${name}: at most ${PLAIN.format(limit)} allowed, got ${PLAIN.format(list.length)}`);
    list.forEach((item, i) => { if (!item || typeof item !== "object") throw new Error(`${name}[${i}] must be an object`); });
  }
  checkEnums(data, FORM.customer, "");
  products.forEach((p, i) => checkEnums(p, FORM.product, `products[${i}].`));
  transactions.forEach((t, i) => checkEnums(t, FORM.transaction, `transactions[${i}].`));
  clearErrors();
  for (const spec of FORM.customer) setValue(customerInput(spec.key), data[spec.key]);
  productsEl.replaceChildren();
  transactionsEl.replaceChildren();
  for (const p of products) addRow("product", withDefaults(p, FORM.product), { focus: false });
  for (const t of transactions) addRow("transaction", t, { focus: false });
  state.ledger = ledger;
  renderLedger();
  renumber();
  syncDateBounds();
  markStale();
}

/** Load an example; one that no longer fits the contract says so and leaves the form as it was. */
function loadProfile(key) {
  const profile = PROFILES[key];
  try {
    loadCustomer(structuredClone(typeof profile.data === "function" ? profile.data() : profile.data));
  } catch (exc) {
    $("#profile-note").textContent = `${profile.name}: this example does not fit the service's request any more (${exc && exc.message ? exc.message : exc}).`;
    return;
  }
  for (const button of document.querySelectorAll("[data-profile]")) button.setAttribute("aria-pressed", String(button.dataset.profile === key));
  $("#profile-note").textContent = `${profile.name}: ${profile.note}`;
  announce(`${profile.name} loaded.`);
}

// ---- reading and checking the form -----------------------------------------------------------
function readValue(input) {
  const text = input.value.trim();
  if (text === "") return null;
  return input.dataset.kind === "number" || input.dataset.kind === "int" ? Number(text) : text;
}

function collect() {
  const paths = new Map([["body", $("#form-summary")], ["products", $("#products-err")], ["transactions", $("#transactions-err")], ["ledger", $("#ledger-err")]]);
  const body = {};
  for (const spec of FORM.customer) {
    const input = customerInput(spec.key);
    paths.set(spec.key, input);
    const value = readValue(input);
    if (value !== null) body[spec.key] = value;
  }
  for (const [name, list] of [["products", productsEl], ["transactions", transactionsEl]]) {
    body[name] = [...list.children].map((row, i) => {
      paths.set(`${name}[${i}]`, $(".row-error", row));
      const item = {};
      for (const input of row.querySelectorAll("[data-key]")) {
        paths.set(`${name}[${i}].${input.dataset.key}`, input);
        const value = readValue(input);
        if (value !== null) item[input.dataset.key] = value;
      }
      return item;
    });
  }
  if (state.ledger.length) body.ledger = state.ledger;
  state.paths = paths;
  return body;
}

function check(input) {
  const text = input.value.trim();
  const kind = input.dataset.kind;
  if (input.validity && input.validity.badInput) return kind === "date" ? "Enter a complete date." : "Enter a number.";
  if (text === "") return input.required ? (kind === "enum" ? "Choose one." : "Required.") : "";
  if (kind === "number" || kind === "int") {
    const x = Number(text);
    if (!Number.isFinite(x)) return "Enter a number.";
    if (kind === "int" && !Number.isInteger(x)) return "Enter a whole number.";
    const min = input.getAttribute("min");
    const max = input.getAttribute("max");
    if (min !== null && min !== "" && x < Number(min)) return `Must be at least ${PLAIN.format(Number(min))}.`;
    if (max !== null && max !== "" && x > Number(max)) return `Must be at most ${PLAIN.format(Number(max))}.`;
  }
  if (kind === "date") {
    if (!/^\d{4}-\d{2}-\d{2}$/.test(text) || Number.isNaN(Date.parse(text))) return "Enter a date (YYYY-MM-DD).";
    const max = input.getAttribute("max");
    if (max && text > max) return `Must not be after the as-of date, ${fmtDate(max)}.`;
  }
  if (kind === "enum" && ![...input.options].some((o) => o.value === text)) return "Choose one of the options.";
  return "";
}

/** "products[0].balance" in words: "Product 1 · Balance". */
function pathLabel(path) {
  const ALL_SPECS = Object.fromEntries([
    ...FORM.customer.map((s) => [s.key, s]),
    ...FORM.product.map((s) => ["products." + s.key, s]),
    ...FORM.transaction.map((s) => ["transactions." + s.key, s]),
  ]);
  const m = /^(products|transactions|ledger)(?:\[(\d+)\])?(?:\.(.+))?$/.exec(path);
  if (!m) return (ALL_SPECS[path] && ALL_SPECS[path].label) || path.replace(/_/g, " ");
  const word = { products: "Product", transactions: "Transaction", ledger: "Ledger month" }[m[1]];
  if (m[2] === undefined) return `${word}s`;
  const spec = ALL_SPECS[`${m[1]}.${m[3]}`];
  return `${word} ${Number(m[2]) + 1}` + (m[3] ? ` · ${spec ? spec.label : m[3].replace(/_/g, " ")}` : "");
}

/** The API's message, in words. */
function inWords(msg) {
  let text = String(msg || "is not valid").trim();
  text = text.replace(/^Value error, /, "").replace(/^Input should be /, "Must be ").replace(/^Field required$/, "Required");
  text = text.replace(/\bas_of\b/g, "the as-of date");
  text = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?]$/.test(text) ? text : text + ".";
}

function clearErrors() {
  for (const field of form.querySelectorAll(".field.invalid")) field.classList.remove("invalid");
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  for (const error of document.querySelectorAll("#customer-form .error, #ledger-note .error")) { error.textContent = ""; error.hidden = true; delete error.dataset.source; }
  const summary = $("#form-summary");
  summary.hidden = true;
  summary.replaceChildren();
}

function showError(target, message, source) {
  if (!target || target.id === "form-summary") return null;
  if (target.matches("input, select, textarea")) {
    const field = target.closest(".field");
    field.classList.add("invalid");
    target.setAttribute("aria-invalid", "true");
    target = $(".error", field);
  }
  target.textContent = target.textContent ? `${target.textContent} ${message}` : message;
  target.hidden = false;
  target.dataset.source = source;
  return target;
}

function clearField(input) {
  const field = input.closest(".field");
  if (!field || !field.classList.contains("invalid")) return;
  field.classList.remove("invalid");
  input.removeAttribute("aria-invalid");
  const error = $(".error", field);
  error.textContent = "";
  error.hidden = true;
}

function showSummary(heading, problems) {
  const summary = $("#form-summary");
  summary.replaceChildren(el("p", {}, el("strong", {}, heading)),
    el("ul", {}, problems.map((p) => el("li", {},
      p.input ? el("a", { href: `#${p.input.id}`, onclick: (event) => { event.preventDefault(); p.input.focus(); } }, p.label) : el("span", {}, p.label),
      `: ${p.msg}`))));
  summary.hidden = false;
}

function inputLabel(input) {
  const row = input.closest(".row");
  if (!row) return input.dataset.label;
  return `${$(".row-title", row).textContent} · ${input.dataset.label}`;
}

function validate() {
  clearErrors();
  const problems = [];
  for (const input of form.querySelectorAll("[data-key]")) {
    const msg = check(input);
    if (msg) { showError(input, msg, "client"); problems.push({ input, label: inputLabel(input), msg }); }
  }
  for (const [name, list] of [["products", productsEl], ["transactions", transactionsEl]]) {
    const limit = CONTRACT.limits[name];
    if (list.children.length > limit) {
      const msg = `At most ${PLAIN.format(limit)} ${name}; remove ${PLAIN.format(list.children.length - limit)}.`;
      showError($(`#${name}-err`), msg, "client");
      problems.push({ input: null, label: name[0].toUpperCase() + name.slice(1), msg });
    }
  }
  return problems;
}

// ---- talking to the service -------------------------------------------------------------------
async function call(path, options = {}) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 60000);
  try {
    const response = await fetch(path, { ...options, signal: controller.signal, headers: { Accept: "application/json", ...(options.headers || {}) } });
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    return { status: response.status, ok: response.ok, data, text, headers: response.headers };
  } catch (error) {
    return { status: 0, ok: false, data: null, text: "", headers: new Headers(), network: controller.signal.aborted ? "timeout" : String(error && error.message ? error.message : error) };
  } finally {
    clearTimeout(timer);
  }
}

function retryAfter(reply, fallback) {
  const seconds = Number(reply.headers.get("Retry-After"));
  return Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds, 600) : fallback;
}

/** The message for a reply that is not a prediction: status by status, in words. */
function trouble(reply) {
  const detail = describe(reply.data, reply.text);
  const id = reply.headers.get("X-Request-ID");
  if (reply.status === 0) {
    return reply.network === "timeout"
      ? { title: "The service did not answer within a minute.", body: "It may be busy training or scoring; try again shortly." }
      : { title: "Could not reach the CLV service.", body: `Check that it is running (make run) and that this page was opened from it (${location.origin}). The browser said: ${reply.network}.` };
  }
  if (reply.status === 503) {
    return { title: "The model is not ready yet.", body: `${sentence(detail) || "No model is serving."} Try again in about ${retryAfter(reply, 30)} s; the status at the top of the page turns green when a model is serving.`, wait: true };
  }
  if (reply.status === 429) {
    return { title: "Rate limit reached.", body: `Too many predictions from this address in a short time${detail ? ` (${detail})` : ""}. Try again in ${retryAfter(reply, 60)} s.`, wait: true };
  }
  if (reply.status === 413) return { title: "The customer is too large to send.", body: `The service accepts bodies up to 2 MB: remove some transactions. ${sentence(detail)}` };
  if (reply.status >= 500) return { title: `The service failed (${reply.status}).`, body: `${sentence(detail) || "No details."}${id ? ` Request id: ${id}.` : ""}` };
  return { title: `The service refused the request (${reply.status}).`, body: `${sentence(detail) || "No details."}${id ? ` Request id: ${id}.` : ""}` };
}

function notice(problem, bad = true) {
  return el("div", { class: `notice${bad ? " bad" : ""}`, role: "alert" }, el("p", {}, el("strong", {}, problem.title)), el("p", {}, problem.body));
}

/** The line under the title (a live region): redrawn only when what it says changes, so a poll that finds
 *  nothing new is not read out again. */
function setStatus(kind, ...kids) {
  const line = el("span", {}, ...kids);
  const key = `${kind}|${line.innerHTML}`;
  if ($("#model-status").dataset.key === key) return;
  $("#model-status").dataset.key = key;
  $("#model-status").replaceChildren(el("span", { class: `dot ${kind}`, "aria-hidden": "true" }), line);
}

/** The banner holds one notice per source, the contract's above the model's; hidden when it holds none. */
const banners = new Map([["contract", null], ["model", null]]);
function setBanner(source, box) {
  banners.set(source, box);
  const boxes = [...banners.values()].filter(Boolean);
  $("#banner").replaceChildren(...boxes);
  $("#banner").hidden = !boxes.length;
}

function showBanner(source, problem, retrySeconds, retry) {
  const box = notice(problem, !problem.wait);
  if (retrySeconds) {
    box.append(el("p", {}, `Checking again in ${retrySeconds} s. `, el("button", { type: "button", class: "link", onclick: retry }, "Check now")));
  }
  setBanner(source, box);
}

/** Read the contract, then build the form and load the README example. Without it there is no form, and the
 *  banner says why; a document that could not be fetched is fetched again. */
async function loadContract() {
  clearTimeout(state.contractTimer);
  const reply = await call("/openapi.json");
  let why;
  if (reply.ok && reply.data && typeof reply.data === "object") {
    try {
      if (!CONTRACT) buildForm(readContract(reply.data));  // once, however many checks were in flight
      setBanner("contract", null);
      return;
    } catch (exc) {
      why = `It does not describe the request as this page reads it: ${exc && exc.message ? exc.message : exc}.`;
    }
  } else if (reply.status === 0) {
    why = `${trouble(reply).title} ${trouble(reply).body}`;
  } else {
    const detail = describe(reply.data, reply.text);
    why = reply.ok ? "It is not JSON." : `The service answered ${reply.status}${detail ? `: ${detail}` : ""}.`;
  }
  const retry = reply.ok ? null : 15;  // the same document would fail the same way
  showBanner("contract", {
    title: "The form is not available: the page could not read the service's description of its request (/openapi.json).",
    body: `The page takes the fields, their limits and the example from it. ${why}`,
  }, retry, loadContract);
  $("#form-wait").textContent = "The form appears here once the service's description of its request can be read.";
  if (retry) state.contractTimer = setTimeout(loadContract, retry * 1000);
}

/** The form from the contract, all or nothing; then the README example (or the first example if it has none). */
function buildForm(contract) {
  const fields = {
    customer: formFields(CUSTOMER_FIELDS, contract.customer),
    product: formFields(PRODUCT_FIELDS, contract.product),
    transaction: formFields(TRANSACTION_FIELDS, contract.transaction),
  };
  const inputs = fields.customer.map((spec) => makeField(spec, "c"));
  CONTRACT = contract;
  FORM = fields;
  customerBox.replaceChildren(...inputs);
  $("[data-profile=readme]").hidden = !contract.example;
  $("#form-wait").hidden = true;
  $("#examples").hidden = false;
  form.hidden = false;
  renumber();
  showAsOfHint();
  syncDateBounds();
  loadProfile(contract.example ? "readme" : "new");
}

function showAsOfHint() {
  const hint = customerInput("as_of") && $(".hint", customerInput("as_of").closest(".field"));
  if (hint && state.card) hint.textContent = `Empty: ${fmtDate(state.card.data_last_date)}, the model's last data date`;
}

const HEALTH_SECONDS = 15;  // how often the page asks /health which model serves
const CARD_REFRESH_SECONDS = 30;  // after predictions, the card (and its drift) is read again at most this often
const SYNTHETIC_WORDS = "Trained on a synthetic bank (generated data), not on real customers";

/** Load the model card. A card of the version already shown only redraws its drift (open details stay open);
 *  a card of another version is drawn whole and the change is announced. Calls while one is in flight are
 *  folded into one more call after it. */
async function loadCard() {
  if (state.cardLoading) { state.cardAgain = true; return; }
  state.cardLoading = true;
  clearTimeout(state.cardTimer);
  state.cardTimer = null;
  clearTimeout(state.refreshTimer);
  state.refreshTimer = null;
  state.cardLoadedAt = Date.now();
  let reply;
  try {
    reply = await call("/model");
    showCardReply(reply);
  } finally {
    state.cardLoading = false;
  }
  if (state.cardAgain) { state.cardAgain = false; loadCard(); }
}

function showCardReply(reply) {
  if (reply.ok && reply.data && typeof reply.data === "object" && typeof reply.data.version === "string") {
    const before = state.card ? state.card.version : null;
    state.card = reply.data;
    setBanner("model", null);
    if (before && before !== state.card.version) {
      state.versionChange = { from: before, to: state.card.version, at: new Date() };
      const older = state.result && state.result.model_version !== state.card.version ? " The prediction shown was made by the previous model." : "";
      announce(`A new model now serves: version ${state.card.version}, in place of ${before}. The model card has been updated.${older}`);
    }
    noteServing({ version: state.card.version, trained_at: state.card.trained_at, synthetic: state.card.synthetic_data === true }, true);
    showAsOfHint();
    syncDateBounds();
    if (state.shown === state.card.version && $("#drift-body")) renderDrift(state.card.drift);
    else renderCard(state.card);
    return;
  }
  const problem = trouble(reply);
  if (state.shown && reply.status !== 503) {  // a refresh that failed: the card shown is still right
    $("#drift-updated").textContent = `Could not refresh: ${problem.title}`;
    if (state.announceRefresh) announce(`Could not refresh the drift: ${problem.title}`);
    state.announceRefresh = false;
    return;
  }
  const seconds = reply.status === 503 || reply.status === 429 ? retryAfter(reply, 30) : 15;
  setStatus(reply.status === 503 ? "wait" : "bad", problem.title);
  showBanner("model", problem, seconds, loadCard);
  $("#card-body").replaceChildren(el("p", { class: "muted" }, `The model card appears here once a model is serving. ${problem.title}`));
  state.shown = null;
  state.cardTimer = setTimeout(loadCard, seconds * 1000);
}

/** What /health or /model said serves. From /health, another version than the card's reloads the card. */
function noteServing(serving, fromCard = false) {
  state.serving = serving;
  state.synthetic.set(serving.version, serving.synthetic);
  const card = state.card && state.card.version === serving.version ? state.card : null;
  setStatus("ok", "Model ", el("strong", { class: "serving-version", id: "serving-version" }, serving.version),
    ` serving · trained ${fmtDateTime(serving.trained_at)}${card ? ` on data up to ${fmtDate(card.data_last_date)}` : ""} `,
    serving.synthetic ? el("span", { class: "badge", id: "status-synthetic", title: SYNTHETIC_WORDS }, "generated data") : null);
  markOlderResult();
  if (fromCard) return;
  if (state.card ? state.card.version !== serving.version : state.cardTimer !== null) loadCard();
}

/** Ask /health which model serves; again every HEALTH_SECONDS while the tab is shown, and when it is shown again. */
async function checkHealth() {
  clearTimeout(state.healthTimer);
  state.healthTimer = setTimeout(checkHealth, HEALTH_SECONDS * 1000);
  if (document.hidden) return;
  const reply = await call("/health");
  const h = reply.data;
  if (reply.ok && h && h.status === "ok" && typeof h.model_version === "string") {
    noteServing({ version: h.model_version, trained_at: h.trained_at, synthetic: h.synthetic_data === true });
  } else if (reply.status === 503 && state.shown) {
    state.serving = null;
    loadCard();  // no model serves any more: the card says so, and is read again once one does
  }
}

/** A prediction shown that the model serving now did not make says so. */
function markOlderResult() {
  const note = $("#result-older");
  if (!note || !state.result) return;
  const made = state.result.model_version;
  const now = state.serving && state.serving.version;
  const older = Boolean(now && made && made !== now);
  $("#result-panel").classList.toggle("older", older);
  note.hidden = !older;
  note.textContent = older ? `Made by model ${made}, which no longer serves: model ${now} does now. Press Predict CLV to score this customer with it.` : "";
  $("#clv-model-older").textContent = older ? " · an older model" : "";
}

/** After a prediction: read the card (its drift) again, at most once every CARD_REFRESH_SECONDS. */
function refreshCardSoon() {
  if (state.refreshTimer || !state.shown) return;
  const wait = Math.max(0, state.cardLoadedAt + CARD_REFRESH_SECONDS * 1000 - Date.now());
  state.refreshTimer = setTimeout(() => { state.refreshTimer = null; loadCard(); }, wait);
}

let busy = false;
async function predict(event) {
  event.preventDefault();
  if (busy) return;
  const problems = validate();
  if (problems.length) {
    showSummary(`Please check ${plural(problems.length, "field", "fields")} before predicting:`, problems);
    (problems.find((p) => p.input) || {}).input?.focus();
    if (!problems.some((p) => p.input)) $("#form-summary").focus();
    announce(`${plural(problems.length, "field needs", "fields need")} attention.`);
    return;
  }
  const body = collect();
  const payload = JSON.stringify(body);
  if (new Blob([payload]).size > BODY_BYTES) {
    showSummary("The customer is too large to send:", [{ input: null, label: "Request", msg: "over 2 MB; remove some transactions." }]);
    $("#form-summary").focus();
    return;
  }
  busy = true;
  const button = $("#predict");
  button.disabled = true;
  $("#predict-state").textContent = "Predicting…";
  $("#result-panel").setAttribute("aria-busy", "true");
  const reply = await call("/predict/clv", { method: "POST", headers: { "Content-Type": "application/json" }, body: payload });
  busy = false;
  button.disabled = false;
  $("#predict-state").textContent = "";
  $("#result-panel").removeAttribute("aria-busy");
  if (reply.ok && reply.data && finite(reply.data.predicted_clv)) {
    renderResult(reply.data, body);
    if (state.serving && reply.data.model_version !== state.serving.version) checkHealth();  // another version answered
    refreshCardSoon();
    announce(`Predicted CLV ${money(reply.data.predicted_clv)}, 80% interval ${money(reply.data.clv_interval.low)} to ${money(reply.data.clv_interval.high)}.`);
    revealResult();
    return;
  }
  if (reply.status === 422 && reply.data && Array.isArray(reply.data.detail)) {
    showApiErrors(reply.data.detail);
    return;
  }
  const problem = trouble(reply);
  $("#result").replaceChildren(notice(problem, !problem.wait));
  state.result = null;
  if (reply.status === 503 && !state.card) loadCard();
  announce(`${problem.title} ${problem.body}`);
  revealResult();
}

function showApiErrors(detail) {
  clearErrors();
  const problems = [];
  for (const item of detail) {
    const path = String((item && item.field) || "body");
    const msg = inWords(item && item.msg);
    let target = null;
    for (let p = path; p; p = p.replace(/(\.[^.[\]]+|\[\d+\])$/, "") || "") {
      if (state.paths.has(p)) { target = state.paths.get(p); break; }
      if (!/(\.[^.[\]]+|\[\d+\])$/.test(p)) break;
    }
    if (target && target !== state.paths.get(path)) showError(target, `${pathLabel(path)}: ${msg}`, "api");
    else showError(target, msg, "api");
    problems.push({ input: target && target.matches("input, select") ? target : null, label: pathLabel(path), msg });
  }
  showSummary(`The service refused ${plural(problems.length, "field", "fields")}:`, problems);
  const first = problems.find((p) => p.input);
  if (first) first.input.focus(); else $("#form-summary").focus();
  $("#result").replaceChildren(el("p", { class: "muted" }, "Not scored: correct the fields marked in the form and predict again."));
  state.result = null;
  announce(`The service refused ${plural(problems.length, "field", "fields")}. ${problems.map((p) => `${p.label}: ${p.msg}`).join(" ")}`);
}

function revealResult() {
  if (!window.matchMedia("(max-width: 959px)").matches) return;
  const panel = $("#result-panel");
  if (panel.getBoundingClientRect().top > window.innerHeight * 0.6 || panel.getBoundingClientRect().bottom < 0) panel.scrollIntoView({ block: "start" });
}

function markStale() {
  if (state.result) $("#result-panel").classList.add("stale");
}

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

// ---- the answer -----------------------------------------------------------------------------
function confidenceWord(score) {
  return score >= 0.6 ? "high" : score >= 0.35 ? "moderate" : "low";
}

function renderResult(r, body) {
  state.result = r;
  $("#result-panel").classList.remove("stale");
  const { low, high, level } = r.clv_interval;
  const levelPct = Math.round((level || 0.8) * 100);
  const asOfNote = body.as_of ? "" : " (the model's default)";
  const intervalBox = el("div", { class: "chart", id: "interval-chart" });
  const driversBox = el("div", { class: "chart", id: "drivers-chart" });
  const score = r.confidence_score;
  const definition = state.card && state.card.confidence_definition;
  const drivers = r.drivers && r.drivers.length
    ? [el("p", { class: "muted small" }, `The model starts from the average customer, ${money(r.drivers_base)}, and these features move this customer to ${money(r.predicted_clv)}.`),
      el("div", { class: "legend" },
        el("span", {}, el("span", { class: "swatch", style: "background: var(--up)" }), "raises the value"),
        el("span", {}, el("span", { class: "swatch", style: "background: var(--down)" }), "lowers the value"),
        el("span", {}, el("span", { class: "swatch", style: "background: var(--other)" }), "all other features")),
      driversBox]
    : [el("p", { class: "muted" }, "No drivers: the customer has no open product at the as-of date, so nothing further is expected.")];
  const synthetic = state.synthetic.has(r.model_version) ? state.synthetic.get(r.model_version) : Boolean(state.serving && state.serving.synthetic);
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
      el("h3", {}, "Why: the biggest drivers"),
      ...drivers,
      el("p", { class: "meta", id: "clv-model" }, `Model ${r.model_version}`, el("span", { id: "clv-model-older" }), ` · scored ${fmtDateTime(r.prediction_timestamp)}`),
      el("details", {}, el("summary", {}, "Response as JSON"), el("pre", {}, JSON.stringify(r, null, 2)))));
  chart(intervalBox, intervalChart(r));
  if (r.drivers && r.drivers.length) chart(driversBox, driversChart(r));
  markOlderResult();
}

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

function renderCard(card) {
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
  const change = state.versionChange && state.versionChange.to === card.version ? state.versionChange : null;
  const focused = document.activeElement && $("#card-body").contains(document.activeElement) ? document.activeElement.id : null;
  fill($("#card-body"),
    card.synthetic_data ? el("p", { class: "badge", id: "card-synthetic" }, `${SYNTHETIC_WORDS}: its metrics describe the generator's bank.`) : null,
    change ? el("p", { class: "notice", id: "version-note" }, `Updated at ${TIME.format(change.at)} UTC: model ${change.to} has taken over from ${change.from}, without a restart of the service.`) : null,
    el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))])),
    el("h3", {}, "Held-out metrics against the baselines"),
    comparison(card),
    metricsTable(card),
    el("p", { class: "muted small" }, "Bold: the best of the model and the baselines on each row. The oracle uses the generator's knowledge of each customer's future, so no model can beat it."),
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
        el("button", { type: "button", id: "drift-refresh", onclick: () => { state.announceRefresh = true; loadCard(); } }, "Refresh the drift"),
        el("span", { class: "muted small", id: "drift-updated" })),
      el("div", { id: "drift-body" })));
  state.shown = card.version;
  if (deciles.length) chart(decileBox, decileChart(deciles));
  if (importance.length) chart(importanceBox, importanceChart(importance));
  renderDrift(card.drift);
  if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
}

// ---- input drift (GET /model's drift) ------------------------------------------------------------
const MIN_DRIFT_ROWS = 50;  // the service measures drift once it has scored this many customers (clv/service/telemetry.py)
const DRIFT_TOP = 8;  // features drawn; the table in the details lists them all

const psiText = (x) => (finite(x) ? x.toFixed(3) : "—");
function psiBand(value, t) {
  return value > t.significant ? "significant" : value >= t.moderate ? "moderate" : "stable";
}

function renderDrift(drift) {
  const box = $("#drift-body");
  if (!box) return;
  $("#drift-updated").textContent = `Read at ${TIME.format(new Date())} UTC.`;
  if (!drift || typeof drift !== "object") {
    box.replaceChildren(el("p", { class: "muted", id: "drift-none" }, `Not enough recent requests yet: the service compares them with the training data once it has scored ${MIN_DRIFT_ROWS} customers.`));
    if (state.announceRefresh) announce("Not enough recent requests yet to measure input drift.");
    state.announceRefresh = false;
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
  if (state.announceRefresh) announce(`Input drift over the ${plural(drift.rows, "customer", "customers")} scored most recently: ${movedText}.`);
  state.announceRefresh = false;
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

// ---- wiring ---------------------------------------------------------------------------------
form.addEventListener("submit", predict);
form.addEventListener("input", (event) => {
  const target = event.target;
  if (target.matches("[data-key]")) clearField(target);
  if (target.id === "c-as_of") syncDateBounds();
  if (target.closest("#transactions")) summarizeTransactions();
  if (target.id !== "json-text") markStale();
});
form.addEventListener("change", (event) => { if (event.target.matches("[data-key]")) markStale(); });
$("#add-product").addEventListener("click", () => addRow("product"));
$("#add-transaction").addEventListener("click", () => addRow("transaction"));
for (const button of document.querySelectorAll("[data-profile]")) button.addEventListener("click", () => loadProfile(button.dataset.profile));
$("#json-load").addEventListener("click", () => {
  const error = $("#json-err");
  error.hidden = true;
  try {
    loadCustomer(JSON.parse($("#json-text").value));
    for (const button of document.querySelectorAll("[data-profile]")) button.setAttribute("aria-pressed", "false");
    $("#profile-note").textContent = "Loaded from JSON.";
    announce("The form was filled from the JSON.");
  } catch (exc) {
    error.textContent = `Could not use this JSON: ${exc && exc.message ? exc.message : exc}`;
    error.hidden = false;
    $("#json-text").focus();
  }
});
$("#json-show").addEventListener("click", () => {
  $("#json-text").value = JSON.stringify(collect(), null, 2);
  $("#json-err").hidden = true;
  $("#json-text").focus();
});

// read-only, for tests and the console; contract(): a copy of what the page read from /openapi.json, or null
window.clvPage = Object.freeze({ featureLabel, featureValue, contract: () => (CONTRACT ? structuredClone(CONTRACT) : null) });
document.addEventListener("visibilitychange", () => { if (!document.hidden && state.healthTimer) checkHealth(); });
loadContract().then(() => { loadCard(); checkHealth(); });  // the form first, then the model card and the version
