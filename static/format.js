// Small helpers shared by the views: elements, numbers, money, dates, words, and feature names in words.

// ---- small helpers -------------------------------------------------------------------------
export const $ = (selector, root = document) => root.querySelector(selector);
export function el(tag, attrs = {}, ...kids) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "style") node.style.cssText = value; // through CSSOM: the page's CSP refuses style attributes
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid !== null && kid !== undefined && kid !== false) node.append(kid instanceof Node ? kid : String(kid));
  }
  return node;
}
/** replaceChildren that, like el(), flattens lists and leaves out null, undefined and false. */
export const fill = (node, ...kids) => node.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false));

const query = new URLSearchParams(location.search);
function moneyFormat(currency, digits) {
  return new Intl.NumberFormat("en-US", { style: "currency", currency, minimumFractionDigits: digits, maximumFractionDigits: digits });
}
let currency = (query.get("currency") || "USD").toUpperCase();
try { moneyFormat(currency, 2); } catch { currency = "USD"; }
const MONEY = moneyFormat(currency, 2);
const MONEY0 = moneyFormat(currency, 0);
export const MONEY_SHORT = new Intl.NumberFormat("en-US", { style: "currency", currency, notation: "compact", maximumFractionDigits: 1 });
export const PLAIN = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
export const finite = (x) => typeof x === "number" && Number.isFinite(x);
export const money = (x) => (finite(x) ? MONEY.format(x) : "—");
export const money0 = (x) => (finite(x) ? MONEY0.format(x) : "—");
export const signedMoney = (x) => (x >= 0 ? "+" : "\u2212") + MONEY.format(Math.abs(x));
export const pct = (x, digits = 1) => (finite(x) ? `${(x * 100).toFixed(digits)}%` : "—");
export const num = (x, digits = 3) => (finite(x) ? x.toFixed(digits) : "—");
const DATE = new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", year: "numeric", timeZone: "UTC" });
const DATETIME = new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit", timeZone: "UTC" });
export const TIME = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit", timeZone: "UTC" });
export function fmtDate(iso) {
  const m = /^(\d{4})-(\d{2})-(\d{2})/.exec(String(iso || ""));
  return m ? DATE.format(new Date(Date.UTC(+m[1], +m[2] - 1, +m[3]))) : String(iso || "—");
}
export function fmtDateTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso || "—") : `${DATETIME.format(d)} UTC`;
}
export const SYNTHETIC_WORDS = "Trained on a synthetic bank (generated data), not on real customers";
export const plural = (n, one, many) => `${PLAIN.format(n)} ${n === 1 ? one : many}`;
export function announce(text) {
  const live = $("#announce");
  live.textContent = "";
  setTimeout(() => { live.textContent = text; }, 30);
}

/** Text as a sentence: capital first letter, closing full stop. */
export function sentence(text) {
  const t = String(text || "").trim();
  if (!t) return "";
  const capital = t.charAt(0).toUpperCase() + t.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}

/** A message from any error body, always as words: never "[object Object]". */
export function describe(data, text) {
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
// names made of a pattern: the first that matches gives the words
const FEATURE_PATTERNS = [
  [/^region_(.+)$/, (m) => `Region is ${m[1]}`],
  [/^acquisition_(.+)$/, (m) => `Came through ${m[1]}`],
  [/^open_(.+)$/, (m) => `Open ${m[1].toLowerCase()} products`],
  [/^txn_count_(\d+)d$/, (m) => `Transactions, last ${m[1]} days`],
  [/^inflow_(\d+)d$/, (m) => `Money in, last ${m[1]} days`],
  [/^outflow_(\d+)d$/, (m) => `Money out, last ${m[1]} days`],
  [/^count_90d_(.+)$/, (m) => `${TYPE_PLURALS[m[1]] || m[1]}, last 90 days`],
];
export function featureLabel(name) {
  if (FEATURE_LABELS[name]) return FEATURE_LABELS[name];
  for (const [pattern, words] of FEATURE_PATTERNS) {
    const m = pattern.exec(name);
    if (m) return words(m);
  }
  const words = String(name).replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}
export function featureValue(name, value) {
  if (value === null || value === undefined || !finite(value)) return "unknown";
  if (/^(region|acquisition)_/.test(name)) return value >= 0.5 ? "yes" : "no";
  if (/(share|utilisation)/.test(name)) return pct(value, 0);
  if (/_trend_/.test(name)) return `\u00d7${Math.exp(value).toFixed(2)}`;
  if (/^(open_|products_ever|opened_|closed_|txn_count_|count_90d_)|months_12m$/.test(name)) return PLAIN.format(value);
  if (/^(income|credit_limit)$|balance|inflow|outflow|^margin_|_12m$|_change_/.test(name)) return money0(value);
  if (/_days$/.test(name)) return plural(Math.round(value), "day", "days");
  if (name === "tenure_months" || name === "months_since_last_open") return `${value.toFixed(1)} months`;
  if (name === "age") return `${PLAIN.format(value)} years`;
  return PLAIN.format(value);
}
