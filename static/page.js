// The page's entry: talking to the service (contract, health, card, predictions) and the wiring of the form.
import { renderCard } from "./card.js";
import { BODY_BYTES, CONTRACT, CUSTOMER_FIELDS, PRODUCT_FIELDS, TRANSACTION_FIELDS, formFields, readContract, setContract } from "./contract.js";
import { renderDrift } from "./drift.js";
import { addRow, check, clearErrors, clearField, collect, customerBox, customerInput, form, inWords, loadCustomer, loadProfile, makeField, pathLabel, renumber, showError, showSummary, state, summarizeTransactions, syncDateBounds, validate } from "./form.js";
import { $, announce, describe, el, featureLabel, featureValue, finite, fmtDate, fmtDateTime, money, plural, sentence } from "./format.js";
import { loadPortfolio } from "./portfolio.js";
import { renderResult } from "./result.js";

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
  setContract(contract, fields);
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
export const SYNTHETIC_WORDS = "Trained on a synthetic bank (generated data), not on real customers";

/** Load the model card. A card of the version already shown only redraws its drift (open details stay open);
 *  a card of another version is drawn whole and the change is announced. Calls while one is in flight are
 *  folded into one more call after it. */
export async function loadCard() {
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
export function markOlderResult() {
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
  const reply = await call("/predict/clv?curve=true", { method: "POST", headers: { "Content-Type": "application/json" }, body: payload });
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

export function markStale() {
  if (state.result) $("#result-panel").classList.add("stale");
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
function showView(name) {
  const portfolio = name === "portfolio";
  $("#customer-view").hidden = portfolio;
  $("#portfolio-panel").hidden = !portfolio;
  $("#view-customer").setAttribute("aria-pressed", String(!portfolio));
  $("#view-portfolio").setAttribute("aria-pressed", String(portfolio));
  if (portfolio) { loadPortfolio(); $("#portfolio-title").focus(); }
}
$("#view-customer").addEventListener("click", () => showView("customer"));
$("#view-portfolio").addEventListener("click", () => showView("portfolio"));
loadContract().then(() => { loadCard(); checkHealth(); });  // the form first, then the model card and the version
