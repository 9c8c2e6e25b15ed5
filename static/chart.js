// The page's small chart helper, shared by its views: SVG elements, a chart redrawn when its container's
// width changes, and the axis arithmetic. No library, no build step: a plain ES module served from /static.

const SVG_NS = "http://www.w3.org/2000/svg";
export function svg(tag, attrs = {}, ...kids) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(key, String(value));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid !== null && kid !== undefined && kid !== false) node.append(kid instanceof Node ? kid : String(kid));
  }
  return node;
}
export const titled = (text) => svg("title", {}, text);

const charts = new Map();  // container -> draw function; redrawn when its width changes
export function chart(container, draw) {
  charts.set(container, { draw, width: 0 });
  redraw(container);
}
function redraw(container) {
  const entry = charts.get(container);
  if (!entry || !container.isConnected) { charts.delete(container); return; }
  const width = Math.max(Math.floor(container.clientWidth), 260);
  if (width === entry.width) return;
  entry.width = width;
  container.replaceChildren(entry.draw(width));
}
let resizeFrame = 0;
window.addEventListener("resize", () => {
  cancelAnimationFrame(resizeFrame);
  resizeFrame = requestAnimationFrame(() => { for (const container of [...charts.keys()]) redraw(container); });
});
export function frame(width, height, label) {
  return svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
}
export const clamp = (x, lo, hi) => Math.min(Math.max(x, lo), hi);
export function niceStep(span, count) {
  const raw = span / Math.max(count, 1);
  const power = 10 ** Math.floor(Math.log10(raw || 1));
  const f = raw / power;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * power;
}
