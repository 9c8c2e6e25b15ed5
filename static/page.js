// The page's entry and the only module that knows every view: it asks the service (api.js) which model serves,
// reads its card and the contract, sends predictions, and hands each view what it draws and what to call back.
import { getContract, getHealth, getModelCard, onSignInNeeded, predictClv, retryAfter, signIn, signOut, trouble } from "./api.js";
import { renderCard } from "./card.js";
import { readContract } from "./contract.js";
import { renderDrift } from "./drift.js";
import { buildForm, cardChanged, requestToSend, showApiErrors, wireForm } from "./form.js";
import { $, announce, describe, el, featureLabel, featureValue, finite, fmtDate, fmtDateTime, money, SYNTHETIC_WORDS } from "./format.js";
import { loadPortfolio } from "./portfolio.js";
import { clearResult, markOlderResult, markStale, renderResult } from "./result.js";
import { state } from "./state.js";

const HEALTH_SECONDS = 15; // how often the page asks /health which model serves
const CARD_REFRESH_SECONDS = 30; // after predictions, the card (and its drift) is read again at most this often

// page.js's own bookkeeping
const timers = { contract: null, card: null, health: null, refresh: null };
let cardLoadedAt = 0;
let cardLoading = false;
let cardAgain = false;
let shown = null; // the version whose card #card-body shows; null while it shows why there is none
let versionChange = null; // { from, to, at }: the last change of version this page saw
let refreshAsked = false; // the drift's refresh button was pressed: say what the card read brought
let busy = false; // a prediction is on its way

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
  clearTimeout(timers.contract);
  const reply = await getContract();
  let why;
  if (reply.ok && reply.data && typeof reply.data === "object") {
    try {
      if (!state.contract) buildForm(readContract(reply.data)); // once, however many checks were in flight
      setBanner("contract", null);
      return;
    } catch (exc) {
      why = `It does not describe the request as this page reads it: ${exc?.message ? exc.message : exc}.`;
    }
  } else if (reply.status === 0) {
    why = `${trouble(reply).title} ${trouble(reply).body}`;
  } else {
    const detail = describe(reply.data, reply.text);
    why = reply.ok ? "It is not JSON." : `The service answered ${reply.status}${detail ? `: ${detail}` : ""}.`;
  }
  const retry = reply.ok ? null : 15; // the same document would fail the same way
  showBanner("contract", {
    title: "The form is not available: the page could not read the service's description of its request (/openapi.json).",
    body: `The page takes the fields, their limits and the example from it. ${why}`,
  }, retry, loadContract);
  $("#form-wait").textContent = "The form appears here once the service's description of its request can be read.";
  if (retry) timers.contract = setTimeout(loadContract, retry * 1000);
}

/** Load the model card. A card of the version already shown only redraws its drift (open details stay open);
 *  a card of another version is drawn whole and the change is announced. Calls while one is in flight are
 *  folded into one more call after it. */
async function loadCard() {
  if (cardLoading) { cardAgain = true; return; }
  cardLoading = true;
  clearTimeout(timers.card);
  timers.card = null;
  clearTimeout(timers.refresh);
  timers.refresh = null;
  cardLoadedAt = Date.now();
  try {
    showCardReply(await getModelCard());
  } finally {
    cardLoading = false;
  }
  if (cardAgain) { cardAgain = false; loadCard(); }
}

function showCardReply(reply) {
  const aloud = refreshAsked;
  refreshAsked = false;
  if (reply.ok && reply.data && typeof reply.data === "object" && typeof reply.data.version === "string") {
    const before = state.card ? state.card.version : null;
    state.card = reply.data;
    setBanner("model", null);
    if (before && before !== state.card.version) {
      versionChange = { from: before, to: state.card.version, at: new Date() };
      const older = state.result && state.result.model_version !== state.card.version ? " The prediction shown was made by the previous model." : "";
      announce(`A new model now serves: version ${state.card.version}, in place of ${before}. The model card has been updated.${older}`);
    }
    noteServing({ version: state.card.version, trained_at: state.card.trained_at, synthetic: state.card.synthetic_data === true }, true);
    cardChanged();
    if (shown !== state.card.version || !$("#drift-body")) {
      const change = versionChange?.to === state.card.version ? versionChange : null;
      renderCard(state.card, { change, onRefresh: () => { refreshAsked = true; loadCard(); } });
      shown = state.card.version;
    }
    renderDrift(state.card.drift, { aloud });
    return;
  }
  const problem = trouble(reply);
  if (reply.status === 401 || reply.status === 403) { // no card for this caller: say why, and ask no more
    const words = reply.status === 403 ? "The model card needs a key with the scope clv:read, and the one this tab signed in with lacks it." : problem.body;
    $("#card-body").replaceChildren(el("p", { class: "notice", id: "card-refused" }, `${problem.title} ${words}`));
    shown = null;
    return;
  }
  if (shown && reply.status !== 503) { // a refresh that failed: the card shown is still right
    $("#drift-updated").textContent = `Could not refresh: ${problem.title}`;
    if (aloud) announce(`Could not refresh the drift: ${problem.title}`);
    return;
  }
  const seconds = reply.status === 503 || reply.status === 429 ? retryAfter(reply, 30) : 15;
  setStatus(reply.status === 503 ? "wait" : "bad", problem.title);
  showBanner("model", problem, seconds, loadCard);
  $("#card-body").replaceChildren(el("p", { class: "muted" }, `The model card appears here once a model is serving. ${problem.title}`));
  shown = null;
  timers.card = setTimeout(loadCard, seconds * 1000);
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
  if (state.card ? state.card.version !== serving.version : timers.card !== null) loadCard();
}

/** Ask /health which model serves; again every HEALTH_SECONDS while the tab is shown, and when it is shown again. */
async function checkHealth() {
  clearTimeout(timers.health);
  timers.health = setTimeout(checkHealth, HEALTH_SECONDS * 1000);
  if (document.hidden) return;
  const reply = await getHealth();
  const h = reply.data;
  if (reply.ok && h && h.status === "ok" && typeof h.model_version === "string") {
    noteServing({ version: h.model_version, trained_at: h.trained_at, synthetic: h.synthetic_data === true });
  } else if (reply.ok && h && h.status === "ok" && !state.serving) { // its details need clv:read
    setStatus("ok", "A model is serving (its version shows to a key with the scope clv:read).");
  } else if (reply.status === 503 && shown) {
    state.serving = null;
    loadCard(); // no model serves any more: the card says so, and is read again once one does
  }
}

/** After a prediction: read the card (its drift) again, at most once every CARD_REFRESH_SECONDS. */
function refreshCardSoon() {
  if (timers.refresh || !shown) return;
  const wait = Math.max(0, cardLoadedAt + CARD_REFRESH_SECONDS * 1000 - Date.now());
  timers.refresh = setTimeout(() => { timers.refresh = null; loadCard(); }, wait);
}

async function predict() {
  if (busy) return;
  const sending = requestToSend();
  if (!sending) return;
  busy = true;
  const button = $("#predict");
  button.disabled = true;
  $("#predict-state").textContent = "Predicting…";
  $("#result-panel").setAttribute("aria-busy", "true");
  const reply = await predictClv(sending.payload);
  busy = false;
  button.disabled = false;
  $("#predict-state").textContent = "";
  $("#result-panel").removeAttribute("aria-busy");
  if (reply.ok && reply.data && finite(reply.data.predicted_clv)) {
    renderResult(reply.data, sending.body);
    if (state.serving && reply.data.model_version !== state.serving.version) checkHealth(); // another version answered
    refreshCardSoon();
    announce(`Predicted CLV ${money(reply.data.predicted_clv)}, 80% interval ${money(reply.data.clv_interval.low)} to ${money(reply.data.clv_interval.high)}.`);
    revealResult();
    return;
  }
  if (reply.status === 422 && reply.data && Array.isArray(reply.data.detail)) {
    showApiErrors(reply.data.detail);
    clearResult(el("p", { class: "muted" }, "Not scored: correct the fields marked in the form and predict again."));
    return;
  }
  const problem = trouble(reply);
  clearResult(notice(problem, !problem.wait));
  if (reply.status === 503 && !state.card) loadCard();
  announce(`${problem.title} ${problem.body}`);
  revealResult();
}

/** On a narrow screen the answer is below the form: bring it into view. */
function revealResult() {
  if (!window.matchMedia("(max-width: 959px)").matches) return;
  const panel = $("#result-panel");
  if (panel.getBoundingClientRect().top > window.innerHeight * 0.6 || panel.getBoundingClientRect().bottom < 0) panel.scrollIntoView({ block: "start" });
}

function showView(name) {
  const portfolio = name === "portfolio";
  $("#customer-view").hidden = portfolio;
  $("#portfolio-panel").hidden = !portfolio;
  $("#view-customer").setAttribute("aria-pressed", String(!portfolio));
  $("#view-portfolio").setAttribute("aria-pressed", String(portfolio));
  if (portfolio) { loadPortfolio(); $("#portfolio-title").focus(); }
}

/** The sign-in form shows at a 401, saying why; a key signed in (or out) reloads the page, which reads all again. */
function wireSignIn() {
  onSignInNeeded((why) => {
    $("#sign-in-why").textContent = why;
    $("#sign-in").hidden = false;
    $("#signed-in").hidden = true;
  });
  $("#sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("#api-key").value.trim();
    if (!key) return;
    signIn(key);
    location.reload();
  });
  $("#sign-out").addEventListener("click", () => { signOut(); location.reload(); });
  $("#signed-in").hidden = !state.credential;
}

// ---- wiring ---------------------------------------------------------------------------------
wireSignIn();
wireForm({ onChange: markStale, onSubmit: predict });
$("#view-customer").addEventListener("click", () => showView("customer"));
$("#view-portfolio").addEventListener("click", () => showView("portfolio"));
document.addEventListener("visibilitychange", () => { if (!document.hidden && timers.health) checkHealth(); });
// read-only, for tests and the console; contract(): a copy of what the page read from /openapi.json, or null
window.clvPage = Object.freeze({ featureLabel, featureValue, contract: () => (state.contract ? structuredClone(state.contract) : null) });
loadContract().then(() => { loadCard(); checkHealth(); }); // the form first, then the model card and the version
