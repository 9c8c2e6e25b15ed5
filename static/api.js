// Talking to the service: every fetch of the page, each answer as a plain reply, and a reply that is not the
// answer hoped for in words.
import { describe, sentence } from "./format.js";
import { state } from "./state.js";

const TIMEOUT_MS = 60000;
const KEY_ITEM = "clv-api-key"; // sessionStorage: the tab's key, gone when the tab closes
const signInNeeded = []; // what to call when the service answers 401: the page shows its sign-in form
let refused = false; // the service refused the key this tab signed in with: said until another is signed in

state.credential = sessionStorage.getItem(KEY_ITEM);

/** Keep `key` for this tab and send it from now on. */
export function signIn(key) {
  sessionStorage.setItem(KEY_ITEM, key);
  state.credential = key;
  refused = false;
}

export function signOut() {
  sessionStorage.removeItem(KEY_ITEM);
  state.credential = null;
}

/** `listener(why)` is called at each 401, with why in words. */
export function onSignInNeeded(listener) {
  signInNeeded.push(listener);
}

/** The scope a 403 names ("... lacks the scope clv:portfolio ..."), or "". */
export function missingScope(reply) {
  const match = /the scope (clv:[a-z]+)/.exec(typeof reply.data?.detail === "string" ? reply.data.detail : "");
  return match ? match[1] : "";
}

/** A request to the service; never throws. The reply: { status, ok, data, text, headers }, and `network` (why)
 *  when no answer came: status 0. */
async function call(path, options = {}) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  try {
    const used = state.credential;
    const credential = used ? { Authorization: `Bearer ${used}` } : {};
    const response = await fetch(path, { ...options, signal: controller.signal, headers: { Accept: "application/json", ...credential, ...(options.headers || {}) } });
    if (response.status === 401) {
      if (used && used === state.credential) { signOut(); refused = true; }
      const why = refused ? "The service refused the key this tab signed in with (revoked, or mistyped): sign in again." : "The service needs an API key: sign in.";
      for (const listener of signInNeeded) listener(why);
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    return { status: response.status, ok: response.ok, data, text, headers: response.headers };
  } catch (error) {
    return { status: 0, ok: false, data: null, text: "", headers: new Headers(), network: controller.signal.aborted ? "timeout" : String(error?.message ? error.message : error) };
  } finally {
    clearTimeout(timer);
  }
}

export const getContract = () => call("/openapi.json");
export const getModelCard = () => call("/model");
export const getHealth = () => call("/health");
export const getPortfolio = () => call("/portfolio");
/** POST /predict/clv with the curve; `payload` is the body already as JSON. */
export const predictClv = (payload) => call("/predict/clv?curve=true", { method: "POST", headers: { "Content-Type": "application/json" }, body: payload });

/** The seconds a 429 or 503 asks to wait (Retry-After), or `fallback`; never more than ten minutes. */
export function retryAfter(reply, fallback) {
  const seconds = Number(reply.headers.get("Retry-After"));
  return Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds, 600) : fallback;
}

/** The message for a reply that is not a prediction: status by status, in words. */
export function trouble(reply) {
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
  if (reply.status === 401) return { title: "Sign in needed.", body: "The service answers only a caller with an API key: enter yours at the top of the page." };
  if (reply.status === 403) {
    const scope = missingScope(reply);
    return { title: "Your key may not do this.", body: `The key this tab signed in with lacks the scope ${scope || "this needs"}. Sign in with a key that has it, or ask whoever gives out keys for one.` };
  }
  if (reply.status === 413) return { title: "The customer is too large to send.", body: `The service accepts bodies up to 2 MB: remove some transactions. ${sentence(detail)}` };
  if (reply.status >= 500) return { title: `The service failed (${reply.status}).`, body: `${sentence(detail) || "No details."}${id ? ` Request id: ${id}.` : ""}` };
  return { title: `The service refused the request (${reply.status}).`, body: `${sentence(detail) || "No details."}${id ? ` Request id: ${id}.` : ""}` };
}
