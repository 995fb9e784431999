// Robust accuracy against radius, one SVG chart per norm, built element by element.

import { el, formatEpsilon, svg } from "./dom.js";

const WIDTH = 560;
const HEIGHT = 320;
const PAD = { left: 48, right: 12, top: 14, bottom: 40 };
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf"];
export const THREAT_DASHES = { transfer: "2 3", naive: "8 4", bpda: null, gradient_free: "8 3 2 3" };
export const THREAT_NAMES = {
  transfer: "transfer",
  naive: "naive white-box",
  bpda: "BPDA",
  gradient_free: "gradient-free",
};

export function seriesOf(report, norm) {
  const series = new Map();
  for (const row of report.results || []) {
    if (row.norm !== norm || row.epsilon === null || row.sanity) continue;
    const key = `${row.attack} / ${row.threat_model}`;
    if (!series.has(key)) series.set(key, { attack: row.attack, threat: row.threat_model, points: [] });
    series.get(key).points.push([row.epsilon, row.robust_accuracy]);
  }
  for (const entry of series.values()) entry.points.sort((a, b) => a[0] - b[0]);
  return [...series.values()];
}

function scales(maxEps) {
  const x = (eps) => PAD.left + (eps / maxEps) * (WIDTH - PAD.left - PAD.right);
  const y = (acc) => PAD.top + (1 - acc) * (HEIGHT - PAD.top - PAD.bottom);
  return { x, y };
}

function axes(x, y, maxEps, norm) {
  const parts = [];
  for (const acc of [0, 0.25, 0.5, 0.75, 1]) {
    parts.push(svg("line", { class: "grid", x1: x(0), x2: x(maxEps), y1: y(acc), y2: y(acc) }));
    parts.push(svg("text", { x: PAD.left - 6, y: y(acc) + 4, "text-anchor": "end" }, `${acc * 100}%`));
  }
  for (let i = 0; i <= 4; i += 1) {
    const eps = (maxEps * i) / 4;
    parts.push(svg("text", { x: x(eps), y: HEIGHT - PAD.bottom + 16, "text-anchor": "middle" },
      formatEpsilon(eps)));
  }
  parts.push(svg("line", { class: "axis", x1: x(0), x2: x(maxEps), y1: y(0), y2: y(0) }));
  parts.push(svg("line", { class: "axis", x1: x(0), x2: x(0), y1: y(0), y2: y(1) }));
  parts.push(svg("text", { x: (PAD.left + WIDTH) / 2, y: HEIGHT - 6, "text-anchor": "middle" },
    `radius (${norm === "linf" ? "L-inf" : "L2"})`));
  return parts;
}

function polyline(points, x, y, attributes) {
  const coordinates = points.map(([eps, acc]) => `${x(eps).toFixed(1)},${y(acc).toFixed(1)}`);
  return svg("polyline", { points: coordinates.join(" "), fill: "none", ...attributes });
}

function swatch(attributes) {
  return svg("svg", { width: 28, height: 10, "aria-hidden": "true" },
    svg("line", { x1: 0, x2: 28, y1: 5, y2: 5, ...attributes }));
}

export function accuracyChart(report, norm) {
  const series = seriesOf(report, norm);
  const worst = (report.worst_case || []).filter((w) => w.norm === norm);
  const radii = series.flatMap((s) => s.points.map((p) => p[0]));
  const maxEps = Math.max(...radii, 1e-9);
  const { x, y } = scales(maxEps);
  const attacks = [...new Set(series.map((s) => s.attack))];
  const colour = (attack) => COLOURS[attacks.indexOf(attack) % COLOURS.length];
  const clean = [[0, report.clean_accuracy]];
  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img",
    "aria-label": `Robust accuracy against ${norm === "linf" ? "L-inf" : "L2"} radius`,
  }, ...axes(x, y, maxEps, norm));
  const legend = el("ul", { class: "legend" });
  for (const entry of series) {
    const style = { stroke: colour(entry.attack), "stroke-width": 1.5,
      "stroke-dasharray": THREAT_DASHES[entry.threat] };
    chart.append(polyline(clean.concat(entry.points), x, y, style));
    legend.append(el("li", {}, swatch(style), ` ${entry.attack} / ${THREAT_NAMES[entry.threat] || entry.threat}`));
  }
  if (worst.length) {
    const points = clean.concat(worst.map((w) => [w.epsilon, w.robust_accuracy]));
    const style = { stroke: "#000", "stroke-width": 4 };
    chart.append(polyline(points, x, y, style));
    for (const [eps, acc] of points) chart.append(svg("circle", { cx: x(eps), cy: y(acc), r: 4 }));
    legend.append(el("li", {}, swatch(style), " worst case (the headline)"));
  }
  return el("figure", { class: "chart" }, chart, legend);
}
