// One field of the form: built from the contract's spec, its value read and set, checked as the service would
// check it, and the service's words about it made readable. No state: the form (form.js) holds the fields.
import { el, fmtDate, PLAIN } from "./format.js";

/** A field of the form from the contract's spec: label, input or select, hint and a place for its error. */
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

/** Show a value of the request body in an input; a date-time shows as its date. */
export function setValue(input, value) {
  if (value === null || value === undefined) { input.value = ""; return; }
  if (input.dataset.kind === "date") {
    const m = /^\d{4}-\d{2}-\d{2}/.exec(String(value));
    input.value = m ? m[0] : "";
  } else {
    input.value = String(value);
  }
}

/** An input's value as the request body carries it: null when empty, a number for a number field. */
export function readValue(input) {
  const text = input.value.trim();
  if (text === "") return null;
  return input.dataset.kind === "number" || input.dataset.kind === "int" ? Number(text) : text;
}

/** What is wrong with an input's value, in words; "" when nothing is. */
export function check(input) {
  const text = input.value.trim();
  const kind = input.dataset.kind;
  if (input.validity?.badInput) return kind === "date" ? "Enter a complete date." : "Enter a number.";
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

/** The API's message, in words. */
export function inWords(msg) {
  let text = String(msg || "is not valid").trim();
  text = text.replace(/^Value error, /, "").replace(/^Input should be /, "Must be ").replace(/^Field required$/, "Required");
  text = text.replace(/\bas_of\b/g, "the as-of date");
  text = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

/** "products[0].balance" in words: "Product 1 · Balance". */
/** A path of the request body in words, "products[0].balance" as "Product 1 · Balance"; `fields`: the form's. */
export function pathLabel(path, fields) {
  const ALL_SPECS = Object.fromEntries([
    ...fields.customer.map((s) => [s.key, s]),
    ...fields.product.map((s) => [`products.${s.key}`, s]),
    ...fields.transaction.map((s) => [`transactions.${s.key}`, s]),
  ]);
  const m = /^(products|transactions|ledger)(?:\[(\d+)\])?(?:\.(.+))?$/.exec(path);
  if (!m) return ALL_SPECS[path]?.label || path.replace(/_/g, " ");
  const word = { products: "Product", transactions: "Transaction", ledger: "Ledger month" }[m[1]];
  if (m[2] === undefined) return `${word}s`;
  const spec = ALL_SPECS[`${m[1]}.${m[3]}`];
  return `${word} ${Number(m[2]) + 1}${m[3] ? ` · ${spec ? spec.label : m[3].replace(/_/g, " ")}` : ""}`;
}
