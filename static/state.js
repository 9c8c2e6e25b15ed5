// The page's shared store: what one module learns and others draw from. Only what more than one module reads
// lives here; a module's own bookkeeping (timers, the form's rows) stays in that module.

export const state = {
  contract: null, // readContract(GET /openapi.json) once read: set by form.js's buildForm, all or nothing
  card: null, // the model card last read (GET /model), set by page.js
  serving: null, // the model that serves, from /health or /model, whichever answered last: { version, trained_at, synthetic }
  synthetic: new Map(), // model version -> trained on generated data (synthetic_data of /health and /model)
  result: null, // the prediction shown (POST /predict/clv), or null while none is
  credential: null, // the API key this tab signed in with (kept in sessionStorage), sent by api.js on every fetch
};
