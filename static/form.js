// The form: its fields built from the service's contract, the rows of products and transactions, the examples
// and pasted JSON, and reading and checking what was typed. It knows nothing of the other views: page.js hands it
// what to call when the customer changes and when Predict CLV is pressed.
import { BODY_BYTES, CUSTOMER_FIELDS, formFields, PRODUCT_FIELDS, TRANSACTION_FIELDS } from "./contract.js";
import { PROFILES } from "./examples.js";
import { check, inWords, makeField, pathLabel, readValue, setValue } from "./fields.js";
import { $, announce, el, finite, fmtDate, money0, PLAIN, plural } from "./format.js";
import { state } from "./state.js";

const form = $("#customer-form");
const productsEl = $("#products");
const transactionsEl = $("#transactions");
const customerBox = $("#customer-fields");
let FORM = null; // { customer, product, transaction }: the contract's fields as the form shows them
let ledger = []; // the months of a pasted profit ledger, sent as they came
let uid = 0; // numbers the rows' ids
let paths = new Map(); // a path of the body ("products[0].balance") -> where its error shows, as of the last collect()
let changed = () => {}; // told of every change to the customer: wireForm's onChange

const customerInput = (key) => $(`#c-${key}`);

// ---- the rows of products and transactions --------------------------------------------------------
function addRow(kind, data, { focus = true } = {}) {
  const list = kind === "product" ? productsEl : transactionsEl;
  const specs = FORM[kind];
  const prefix = `${kind[0]}${++uid}`;
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
    changed();
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
  changed();
}

function renumber() {
  for (const [list, word, limit, button] of [[productsEl, "Product", state.contract.limits.products, "#add-product"], [transactionsEl, "Transaction", state.contract.limits.transactions, "#add-transaction"]]) {
    const rows = [...list.children];
    rows.forEach((row, i) => {
      $(".row-title", row).textContent = `${word} ${i + 1}`;
      $(".remove", row).setAttribute("aria-label", `Remove ${word.toLowerCase()} ${i + 1}`);
    });
    const count = $(`#${word.toLowerCase()}s-count`);
    count.textContent = `· ${PLAIN.format(rows.length)}${finite(limit) ? ` of at most ${PLAIN.format(limit)}` : ""}`;
    $(button).disabled = rows.length >= limit;
    const empty = $(".empty", list.parentElement);
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
  return state.card?.data_last_date ?? null;
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
  if (!ledger.length) { note.hidden = true; note.replaceChildren(); return; }
  note.hidden = false;
  note.replaceChildren(
    el("p", {}, `Profit ledger: ${plural(ledger.length, "month", "months")} from the pasted JSON will be sent with the customer. `,
      el("button", { type: "button", class: "link", onclick: () => { ledger = []; renderLedger(); changed(); } }, "Remove the ledger")),
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
  const months = data.ledger ?? [];
  for (const [name, list] of [["products", products], ["transactions", transactions], ["ledger", months]]) {
    const limit = state.contract.limits[name];
    if (!Array.isArray(list)) throw new Error(`${name} must be a list`);
    if (list.length > limit) throw new Error(`${name}: at most ${PLAIN.format(limit)} allowed, got ${PLAIN.format(list.length)}`);
    list.forEach((item, i) => { if (!item || typeof item !== "object") throw new Error(`${name}[${i}] must be an object`); });
  }
  checkEnums(data, FORM.customer, "");
  products.forEach((p, i) => { checkEnums(p, FORM.product, `products[${i}].`); });
  transactions.forEach((t, i) => { checkEnums(t, FORM.transaction, `transactions[${i}].`); });
  clearErrors();
  for (const spec of FORM.customer) setValue(customerInput(spec.key), data[spec.key]);
  productsEl.replaceChildren();
  transactionsEl.replaceChildren();
  for (const p of products) addRow("product", withDefaults(p, FORM.product), { focus: false });
  for (const t of transactions) addRow("transaction", t, { focus: false });
  ledger = months;
  renderLedger();
  renumber();
  syncDateBounds();
  changed();
}

/** Load an example; one that no longer fits the contract says so and leaves the form as it was. */
function loadProfile(key) {
  const profile = PROFILES[key];
  try {
    loadCustomer(structuredClone(profile.data ?? state.contract.example));
  } catch (exc) {
    $("#profile-note").textContent = `${profile.name}: this example does not fit the service's request any more (${exc?.message ? exc.message : exc}).`;
    return;
  }
  for (const button of document.querySelectorAll("[data-profile]")) button.setAttribute("aria-pressed", String(button.dataset.profile === key));
  $("#profile-note").textContent = `${profile.name}: ${profile.note}`;
  announce(`${profile.name} loaded.`);
}

// ---- reading and checking the form -----------------------------------------------------------
/** The request body as the form holds it; notes where each of its paths shows an error (`paths`). */
function collect() {
  paths = new Map([["body", $("#form-summary")], ["products", $("#products-err")], ["transactions", $("#transactions-err")], ["ledger", $("#ledger-err")]]);
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
  if (ledger.length) body.ledger = ledger;
  return body;
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
  if (!field?.classList.contains("invalid")) return;
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
    const limit = state.contract.limits[name];
    if (list.children.length > limit) {
      const msg = `At most ${PLAIN.format(limit)} ${name}; remove ${PLAIN.format(list.children.length - limit)}.`;
      showError($(`#${name}-err`), msg, "client");
      problems.push({ input: null, label: name[0].toUpperCase() + name.slice(1), msg });
    }
  }
  return problems;
}

/** The request to send, { body, payload } (the body as JSON); or null, when the form has problems: each is marked
 *  beside its field, summed up above the form, the first focused and all announced. */
export function requestToSend() {
  const problems = validate();
  if (problems.length) {
    showSummary(`Please check ${plural(problems.length, "field", "fields")} before predicting:`, problems);
    problems.find((p) => p.input)?.input?.focus();
    if (!problems.some((p) => p.input)) $("#form-summary").focus();
    announce(`${plural(problems.length, "field needs", "fields need")} attention.`);
    return null;
  }
  const body = collect();
  const payload = JSON.stringify(body);
  if (new Blob([payload]).size > BODY_BYTES) {
    showSummary("The customer is too large to send:", [{ input: null, label: "Request", msg: "over 2 MB; remove some transactions." }]);
    $("#form-summary").focus();
    return null;
  }
  return { body, payload };
}

/** The 422's `detail` of POST /predict/clv beside the fields it names (or their nearest row or list), summed up. */
export function showApiErrors(detail) {
  clearErrors();
  const problems = [];
  for (const item of detail) {
    const path = String(item?.field || "body");
    const msg = inWords(item?.msg);
    let target = null;
    for (let p = path; p; p = p.replace(/(\.[^.[\]]+|\[\d+\])$/, "") || "") {
      if (paths.has(p)) { target = paths.get(p); break; }
      if (!/(\.[^.[\]]+|\[\d+\])$/.test(p)) break;
    }
    if (target && target !== paths.get(path)) showError(target, `${pathLabel(path, FORM)}: ${msg}`, "api");
    else showError(target, msg, "api");
    problems.push({ input: target?.matches("input, select") ? target : null, label: pathLabel(path, FORM), msg });
  }
  showSummary(`The service refused ${plural(problems.length, "field", "fields")}:`, problems);
  const first = problems.find((p) => p.input);
  if (first) first.input.focus(); else $("#form-summary").focus();
  announce(`The service refused ${plural(problems.length, "field", "fields")}. ${problems.map((p) => `${p.label}: ${p.msg}`).join(" ")}`);
}

/** The form from the contract, all or nothing; then the README example (or the first example if it has none). */
export function buildForm(contract) {
  const fields = {
    customer: formFields(CUSTOMER_FIELDS, contract.customer),
    product: formFields(PRODUCT_FIELDS, contract.product),
    transaction: formFields(TRANSACTION_FIELDS, contract.transaction),
  };
  const inputs = fields.customer.map((spec) => makeField(spec, "c"));
  state.contract = contract;
  FORM = fields;
  customerBox.replaceChildren(...inputs);
  $("[data-profile=readme]").hidden = !contract.example;
  $("#form-wait").hidden = true;
  $("#examples").hidden = false;
  form.hidden = false;
  renumber();
  cardChanged();
  loadProfile(contract.example ? "readme" : "new");
}

/** The model card (state.card) changed: the as-of date's hint names its last data date, which dates may not pass. */
export function cardChanged() {
  const asOf = customerInput("as_of");
  const hint = asOf && $(".hint", asOf.closest(".field"));
  if (hint && state.card) hint.textContent = `Empty: ${fmtDate(state.card.data_last_date)}, the model's last data date`;
  syncDateBounds();
}

/** Listen to the form. `onChange()`: the customer changed; `onSubmit()`: Predict CLV was pressed. */
export function wireForm({ onChange, onSubmit }) {
  changed = onChange;
  form.addEventListener("submit", (event) => { event.preventDefault(); onSubmit(); });
  form.addEventListener("input", (event) => {
    const target = event.target;
    if (target.matches("[data-key]")) clearField(target);
    if (target.id === "c-as_of") syncDateBounds();
    if (target.closest("#transactions")) summarizeTransactions();
    if (target.id !== "json-text") changed();
  });
  form.addEventListener("change", (event) => { if (event.target.matches("[data-key]")) changed(); });
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
      error.textContent = `Could not use this JSON: ${exc?.message ? exc.message : exc}`;
      error.hidden = false;
      $("#json-text").focus();
    }
  });
  $("#json-show").addEventListener("click", () => {
    $("#json-text").value = JSON.stringify(collect(), null, 2);
    $("#json-err").hidden = true;
    $("#json-text").focus();
  });
}
