// The form: example customers, its rows of products and transactions, and reading and checking what was typed.
import { CONTRACT, FORM } from "./contract.js";
import { $, PLAIN, announce, el, finite, fmtDate, money0, plural } from "./format.js";
import { markStale } from "./page.js";

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

// ---- the form ------------------------------------------------------------------------------
export const form = $("#customer-form");
const productsEl = $("#products");
const transactionsEl = $("#transactions");
export const state = {
  card: null, ledger: [], uid: 0, paths: new Map(), result: null, cardTimer: null, contractTimer: null,
  // the model that serves, from /health or /model, whichever answered last: { version, trained_at, synthetic }
  serving: null,
  synthetic: new Map(),  // model version -> trained on generated data (synthetic_data of /health and /model)
  shown: null,  // the version whose card #card-body shows; null while it shows why there is none
  versionChange: null,  // { from, to, at }: the last change of version this page saw
  healthTimer: null, refreshTimer: null, cardLoadedAt: 0, cardLoading: false, cardAgain: false,
  announceRefresh: false,  // the drift's refresh button was pressed: say what the card read brought
};

export function makeField(spec, prefix) {
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

export const customerBox = $("#customer-fields");
export const customerInput = (key) => $(`#c-${key}`);

function setValue(input, value) {
  if (value === null || value === undefined) { input.value = ""; return; }
  if (input.dataset.kind === "date") {
    const m = /^\d{4}-\d{2}-\d{2}/.exec(String(value));
    input.value = m ? m[0] : "";
  } else {
    input.value = String(value);
  }
}

export function addRow(kind, data, { focus = true } = {}) {
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

export function renumber() {
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

export function summarizeTransactions() {
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
export function syncDateBounds() {
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
export function loadCustomer(data) {
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
export function loadProfile(key) {
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

export function collect() {
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

export function check(input) {
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
export function pathLabel(path) {
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
export function inWords(msg) {
  let text = String(msg || "is not valid").trim();
  text = text.replace(/^Value error, /, "").replace(/^Input should be /, "Must be ").replace(/^Field required$/, "Required");
  text = text.replace(/\bas_of\b/g, "the as-of date");
  text = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?]$/.test(text) ? text : text + ".";
}

export function clearErrors() {
  for (const field of form.querySelectorAll(".field.invalid")) field.classList.remove("invalid");
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  for (const error of document.querySelectorAll("#customer-form .error, #ledger-note .error")) { error.textContent = ""; error.hidden = true; delete error.dataset.source; }
  const summary = $("#form-summary");
  summary.hidden = true;
  summary.replaceChildren();
}

export function showError(target, message, source) {
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

export function clearField(input) {
  const field = input.closest(".field");
  if (!field || !field.classList.contains("invalid")) return;
  field.classList.remove("invalid");
  input.removeAttribute("aria-invalid");
  const error = $(".error", field);
  error.textContent = "";
  error.hidden = true;
}

export function showSummary(heading, problems) {
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

export function validate() {
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
