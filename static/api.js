// Talking to the service: every fetch of the page, each answer as a plain reply, and a reply that is not the
// answer hoped for in words.
import { describe, sentence } from "./format.js";

const TIMEOUT_MS = 60000;

/** A request to the service; never throws. The reply: { status, ok, data, text, headers }, and `network` (why)
 *  when no answer came: status 0. */
async function call(path, options = {}) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  try {
    const response = await fetch(path, { ...options, signal: controller.signal, headers: { Accept: "application/json", ...(options.headers || {}) } });
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
  if (reply.status === 413) return { title: "The customer is too large to send.", body: `The service accepts bodies up to 2 MB: remove some transactions. ${sentence(detail)}` };
  if (reply.status >= 500) return { title: `The service failed (${reply.status}).`, body: `${sentence(detail) || "No details."}${id ? ` Request id: ${id}.` : ""}` };
  return { title: `The service refused the request (${reply.status}).`, body: `${sentence(detail) || "No details."}${id ? ` Request id: ${id}.` : ""}` };
}
