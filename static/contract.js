// What the page needs of POST /predict/clv, read from the service's /openapi.json, and how the form presents it.
// Pure: it reads a document and returns what it found; what was read is kept in state.js.
import { finite, PLAIN } from "./format.js";

// ---- the contract: read from the service's own OpenAPI document, GET /openapi.json --------------
// Only the request-body limit is not in the document (a setting of the service, CLV_MAX_BODY_BYTES):
// the page checks against its default, and the service answers 413 if it is set lower.
export const BODY_BYTES = 2 * 1024 * 1024;
const DATE_FORMAT = /^date(-time)?$/;

/** What the page needs of the body of POST /predict/clv, read from the OpenAPI document: the fields of the
 *  customer, of a product and of a transaction (kind, options, min, max, default, required), the lists'
 *  maxItems and the example request. `$ref`s are followed; in an anyOf/oneOf, null means "may be left out"
 *  and a choice of date and date-time strings is a date. Throws, naming the place, on what it cannot read. */
export function readContract(doc) {
  const schemas = doc?.components?.schemas || {};
  const plain = (node, where) => {
    for (let hops = 0; node?.$ref; hops++) {
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
  const post = doc?.paths?.["/predict/clv"]?.post;
  const body = post?.requestBody?.content?.["application/json"]?.schema
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
    limits: { products: list("products").maxItems, transactions: list("transactions").maxItems, ledger: customer.lists.ledger?.maxItems ?? Infinity },
    example: (Array.isArray(examples) ? examples[0] : customer.schema.example) || null,
  };
}

// ---- the form's presentation: order, labels, hints, which dates the as-of date bounds --------
// Kinds, options, bounds and required come from the contract; a field it has and these lists lack is shown
// after them under its own title, and one they name that it lacks is left out.
export const range = (f) => (finite(f.min) && finite(f.max) ? `${PLAIN.format(f.min)} to ${PLAIN.format(f.max)}` : null);
export const CUSTOMER_FIELDS = [
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
export const PRODUCT_FIELDS = [  // `initial`: the value of a new row, when the contract has no default
  { key: "product_type", label: "Type", initial: "Savings" },
  { key: "status", label: "Status" },
  { key: "start_date", label: "Start date", asOf: true },
  { key: "end_date", label: "End date", asOf: true },
  { key: "balance", label: "Balance" },
  { key: "credit_limit", label: "Credit limit" },
  { key: "interest_rate", label: "Interest rate (%)" },
];
export const TRANSACTION_FIELDS = [
  { key: "transaction_date", label: "Date", asOf: true },
  { key: "amount", label: "Amount" },
  { key: "transaction_type", label: "Type", initial: "Deposit" },
  { key: "channel", label: "Channel", initial: "Online" },
];

/** The contract's fields in the page's order and words. */
export function formFields(presentation, fields) {
  const shown = presentation.filter((p) => fields[p.key]).map((p) => {
    const field = fields[p.key];
    return { ...field, label: p.label, asOf: p.asOf, initial: p.initial, hint: typeof p.hint === "function" ? p.hint(field) : p.hint };
  });
  const extra = Object.values(fields).filter((f) => !presentation.some((p) => p.key === f.key)).map((f) => ({ ...f, label: f.title, hint: f.description }));
  return [...shown, ...extra];
}
