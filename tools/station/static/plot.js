/* Hand-written SVG plots: calibration error vs set point with its limit band, and a time trace. */
"use strict";
const SVGNS = "http://www.w3.org/2000/svg";
function el(name, attrs, text) {
  const node = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}
function ticks(lo, hi, n) {
  const span = hi - lo || 1, raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step / 1e6; v += step) out.push(+v.toFixed(10));
  return out;
}
/* points: [{set, error, expanded, tolerance, stage}] — error and tolerance in the same units. */
window.errorPlot = function (svg, points, opts) {
  const W = 480, H = 260, L = 58, R = 12, T = 14, B = 40;
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const xs = points.map(p => p.set).concat(opts.setRange || []);
  const tol = Math.max(0, ...points.map(p => p.tolerance), opts.tolerance || 0);
  const spread = Math.max(tol * 1.6, ...points.map(p => (Math.abs(p.error) + (p.expanded || 0)) * 1.15), opts.emptySpread || 1);
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  if (!isFinite(x0)) { x0 = 0; x1 = 1; }
  const pad = (x1 - x0) * 0.08 || 1; x0 -= pad; x1 += pad;
  const X = v => L + (v - x0) / (x1 - x0) * (W - L - R);
  const Y = v => T + (spread - v) / (2 * spread) * (H - T - B);
  for (const t of ticks(-spread, spread, 6)) {
    svg.appendChild(el("line", {x1: L, x2: W - R, y1: Y(t), y2: Y(t), class: "grid"}));
    svg.appendChild(el("text", {x: L - 6, y: Y(t) + 4, "text-anchor": "end"}, String(t)));
  }
  for (const t of ticks(x0, x1, 6)) {
    svg.appendChild(el("text", {x: X(t), y: H - B + 16, "text-anchor": "middle"}, String(t)));
  }
  /* one band per limit: as-found acceptance (wider), as-left (narrower), widest first */
  const limits = {};
  for (const p of points) limits[p.tolerance] = limits[p.tolerance] || p.stage.replace("_", "-");
  const bands = Object.keys(limits).map(Number).sort((a, b) => b - a);
  bands.forEach((t, i) => {
    svg.appendChild(el("rect", {x: L, width: W - L - R, y: Y(t), height: Y(-t) - Y(t), class: `band band${i}`}));
  });
  bands.forEach((t) => {
    svg.appendChild(el("line", {x1: L, x2: W - R, y1: Y(t), y2: Y(t), class: "limit"}));
    svg.appendChild(el("line", {x1: L, x2: W - R, y1: Y(-t), y2: Y(-t), class: "limit"}));
    svg.appendChild(el("text", {x: W - R - 4, y: Y(t) - 4, "text-anchor": "end"}, `±${t} ${limits[t]} limit`));
  });
  svg.appendChild(el("line", {x1: L, x2: W - R, y1: Y(0), y2: Y(0), class: "axis"}));
  svg.appendChild(el("line", {x1: L, x2: L, y1: T, y2: H - B, class: "axis"}));
  svg.appendChild(el("text", {x: (L + W) / 2, y: H - 6, "text-anchor": "middle"}, opts.xLabel));
  svg.appendChild(el("text", {x: 12, y: (T + H - B) / 2, transform: `rotate(-90 12 ${(T + H - B) / 2})`, "text-anchor": "middle"}, opts.yLabel));
  for (const p of points) {
    const cx = X(p.set) + (p.stage === "as_left" ? 4 : -4), cy = Y(p.error);
    if (p.expanded) svg.appendChild(el("line", {x1: cx, x2: cx, y1: Y(p.error + p.expanded), y2: Y(p.error - p.expanded), class: "bar"}));
    const mark = p.stage === "as_left"
      ? el("rect", {x: cx - 4, y: cy - 4, width: 8, height: 8, class: "left point"})
      : el("circle", {cx: cx, cy: cy, r: 4.5, class: "found point"});
    mark.appendChild(el("title", {}, `${p.stage} ${p.set}: ${p.error} ± ${p.expanded}`));
    svg.appendChild(mark);
  }
};
window.tracePlot = function (svg, samples, span, max) {
  const W = 640, H = 160, L = 40, R = 8, T = 8, B = 22;
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  if (!samples.length) return;
  const tEnd = samples[samples.length - 1][0], t0 = tEnd - span;
  const X = t => L + (t - t0) / span * (W - L - R), Y = v => T + (1 - v / max) * (H - T - B);
  for (const t of ticks(0, max, 4)) {
    svg.appendChild(el("line", {x1: L, x2: W - R, y1: Y(t), y2: Y(t), class: "grid"}));
    svg.appendChild(el("text", {x: L - 4, y: Y(t) + 4, "text-anchor": "end"}, String(t)));
  }
  svg.appendChild(el("line", {x1: L, x2: L, y1: T, y2: H - B, class: "axis"}));
  svg.appendChild(el("text", {x: W - R, y: H - 6, "text-anchor": "end"}, "now"));
  svg.appendChild(el("text", {x: L, y: H - 6}, `-${span / 1000} s`));
  const d = samples.filter(s => s[0] >= t0).map((s, i) => `${i ? "L" : "M"}${X(s[0]).toFixed(1)},${Y(s[1]).toFixed(1)}`).join("");
  svg.appendChild(el("path", {d: d, class: "trace"}));
};
