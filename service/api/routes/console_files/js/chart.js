// Robust accuracy against radius as SVG, one chart per norm, built element by element.
//
// A report can hold thirty (attack, threat model) series, too many for one chart. So the chart
// shows a grouping the reader picks: one line per threat model (the lowest accuracy over its
// attacks), one per attack (the lowest over threat models), or every attack under one threat
// model; each legend entry is a button that hides or shows its line. Every line of a chart has
// a colour (and dash) of its own; the worst case is the wide black line underneath. The radius
// axis is marked at the radii that ran, written as given (8/255, 0.3), and no label reaches
// past the drawing. The published HTML pages draw the same (robustness/html_chart.py).

import { el, svg } from "./dom.js";
import { formatEpsilon, normName, THREAT_NAMES, threatName } from "./format.js";

const WIDTH = 600;
const HEIGHT = 300;
const PAD = { left: 52, right: 20, top: 16, bottom: 46 };
const FONT_PX = 12;
const CHAR_PX = 7.2; // an upper bound on a character's width at FONT_PX in a sans-serif face
// Okabe and Ito's colour-blind-safe hues, one per threat model.
const THREAT_COLOURS = {
  transfer: "#0072B2",
  naive: "#E69F00",
  bpda: "#009E73",
  gradient_free: "#CC79A7",
};
// Twelve hues for attacks, apart from each other and from black; past twelve with a dash.
const ATTACK_COLOURS = ["#4363D8", "#E6194B", "#3CB44B", "#F58231", "#911EB4", "#42D4F4",
  "#F032E6", "#9A6324", "#808000", "#469990", "#800000", "#000075"];
const ATTACK_DASHES = [null, "6 3", "2 2"];
const WORST = "#000000";

function boundedRows(report, norm) {
  return (report.results || []).filter((r) => r.norm === norm && r.epsilon !== null && !r.sanity);
}

// For each value of `key`: the lowest robust accuracy over the rows at each radius.
function lowestBy(rows, key) {
  const lowest = new Map();
  for (const row of rows) {
    if (!lowest.has(row[key])) lowest.set(row[key], new Map());
    const at = lowest.get(row[key]);
    at.set(row.epsilon, Math.min(at.has(row.epsilon) ? at.get(row.epsilon) : 1, row.robust_accuracy));
  }
  return new Map([...lowest].map(([name, at]) => [name, [...at].sort((a, b) => a[0] - b[0])]));
}

function attackStyles(report) {
  const attacks = [...new Set((report.results || []).map((r) => r.attack))];
  return new Map(attacks.map((attack, i) => [attack, {
    colour: ATTACK_COLOURS[i % ATTACK_COLOURS.length],
    dash: ATTACK_DASHES[Math.floor(i / ATTACK_COLOURS.length) % ATTACK_DASHES.length],
  }]));
}

// The groupings a report's chart of this norm offers: [value, label].
export function groupings(report, norm) {
  const threats = Object.keys(THREAT_NAMES)
    .filter((t) => boundedRows(report, norm).some((r) => r.threat_model === t));
  return [
    ["threat", "one line per threat model (its attacks' lowest)"],
    ["attack", "one line per attack (its threat models' lowest)"],
    ...threats.map((t) => [`threat:${t}`, `every attack under ${threatName(t)}`]),
  ];
}

// The series of one grouping: { name, colour, dash, points }.
export function seriesOf(report, norm, grouping) {
  const rows = boundedRows(report, norm);
  if (grouping === "threat") {
    const order = Object.keys(THREAT_NAMES);
    const rank = (threat) => (order.includes(threat) ? order.indexOf(threat) : order.length);
    const lowest = [...lowestBy(rows, "threat_model")].sort((a, b) => rank(a[0]) - rank(b[0]));
    return lowest.map(([threat, points]) => {
      const count = new Set(rows.filter((r) => r.threat_model === threat).map((r) => r.attack)).size;
      return { name: `${threatName(threat)}: lowest of ${count} attack${count === 1 ? "" : "s"}`,
        colour: THREAT_COLOURS[threat] || "#777777", dash: null, points };
    });
  }
  const styles = attackStyles(report);
  const threat = grouping.startsWith("threat:") ? grouping.slice(7) : null;
  const chosen = threat ? rows.filter((r) => r.threat_model === threat) : rows;
  return [...lowestBy(chosen, "attack")].map(([attack, points]) => ({
    name: attack, ...styles.get(attack), points,
  }));
}

function scales(maxEps) {
  const x = (eps) => PAD.left + (eps / maxEps) * (WIDTH - PAD.left - PAD.right);
  const y = (acc) => PAD.top + (1 - acc) * (HEIGHT - PAD.top - PAD.bottom);
  return { x, y };
}

// [centre, text] for 0 and each radius, inside the drawing; a label that would overlap the
// next one is left out (the largest radius always shows).
function tickLabels(x, radii) {
  const kept = [];
  for (const eps of [...new Set([0, ...radii])].sort((a, b) => b - a)) {
    const text = formatEpsilon(eps);
    const half = (text.length * CHAR_PX) / 2;
    const centre = Math.min(Math.max(x(eps), half + 1), WIDTH - half - 1);
    const next = kept[kept.length - 1];
    if (next && centre + half + 4 > next[0] - (next[1].length * CHAR_PX) / 2) continue;
    kept.push([centre, text]);
  }
  return kept.reverse();
}

function grid(x, y, maxEps, radii, norm) {
  const parts = [];
  for (const acc of [0, 0.25, 0.5, 0.75, 1]) {
    parts.push(svg("line", { class: "grid", x1: x(0), x2: x(maxEps), y1: y(acc), y2: y(acc) }));
    parts.push(svg("text", { x: PAD.left - 6, y: y(acc) + 4, "text-anchor": "end" }, `${acc * 100}%`));
  }
  for (const eps of radii) {
    parts.push(svg("line", { class: "grid radius", x1: x(eps), x2: x(eps), y1: y(0), y2: y(1) }));
  }
  for (const [centre, text] of tickLabels(x, radii)) {
    parts.push(svg("text", { class: "tick", x: centre, y: HEIGHT - PAD.bottom + 16, "text-anchor": "middle" }, text));
  }
  parts.push(svg("line", { class: "axis", x1: x(0), x2: x(maxEps), y1: y(0), y2: y(0) }));
  parts.push(svg("line", { class: "axis", x1: x(0), x2: x(0), y1: y(0), y2: y(1) }));
  parts.push(svg("text", { x: (PAD.left + WIDTH - PAD.right) / 2, y: HEIGHT - 8, "text-anchor": "middle" },
    `radius (${normName(norm)})`));
  return parts;
}

function stroke(colour, width, dash) {
  return { stroke: colour, "stroke-width": width, "stroke-dasharray": dash || null };
}

function polyline(points, x, y, style, key) {
  const group = svg("g", { "data-series": key });
  group.append(svg("polyline", {
    points: points.map(([eps, acc]) => `${x(eps).toFixed(1)},${y(acc).toFixed(1)}`).join(" "),
    fill: "none", ...style,
  }));
  const radius = style["stroke-width"] > 3 ? 5 : 2.5;
  for (const [eps, acc] of points.slice(1)) {
    group.append(svg("circle", { cx: x(eps), cy: y(acc), r: radius, fill: style.stroke }));
  }
  return group;
}

function swatch(style) {
  return svg("svg", { width: 32, height: 12, "aria-hidden": "true" },
    svg("line", { x1: 1, x2: 31, y1: 6, y2: 6, ...style }));
}

// An SVG chart and its legend of toggles. Each line: { name, colour, dash, width, points },
// its points starting at radius 0 (the clean accuracy).
function draw(norm, lines, title) {
  const radii = [...new Set(lines.flatMap((l) => l.points.map((p) => p[0])))]
    .filter((eps) => eps > 0).sort((a, b) => a - b);
  const maxEps = Math.max(...radii, 1e-9);
  const { x, y } = scales(maxEps);
  const chart = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, "font-size": FONT_PX, role: "img",
    "aria-label": title }, ...grid(x, y, maxEps, radii, norm));
  const legend = el("ul", { class: "legend" });
  for (const [index, entry] of lines.entries()) {
    const style = stroke(entry.colour, entry.width || 2, entry.dash);
    const key = String(index);
    chart.append(polyline(entry.points, x, y, style, key));
    const toggle = el("button", { type: "button", class: "series", "aria-pressed": "true",
      title: "Hide or show this line" }, swatch(style), el("span", {}, entry.name));
    toggle.addEventListener("click", () => {
      const shown = toggle.getAttribute("aria-pressed") !== "true";
      toggle.setAttribute("aria-pressed", String(shown));
      chart.querySelector(`g[data-series="${key}"]`).classList.toggle("hidden-series", !shown);
    });
    legend.append(el("li", {}, toggle));
  }
  return [chart, legend];
}

function worstLine(report, norm, name, colour, width, dash) {
  const points = (report.worst_case || []).filter((w) => w.norm === norm)
    .map((w) => [w.epsilon, w.robust_accuracy]);
  return points.length
    ? [{ name, colour, dash, width, points: [[0, report.clean_accuracy], ...points] }]
    : [];
}

// A chart with its grouping picker; `grouping` is the one shown first.
export function accuracyChart(report, norm, grouping = "threat") {
  const id = `grouping-${norm}-${Math.random().toString(36).slice(2, 8)}`;
  const picker = el("select", { id, class: "grouping" }, ...groupings(report, norm)
    .map(([value, label]) => el("option", { value, selected: value === grouping }, label)));
  const figure = el("figure", { class: "chart", "data-norm": norm },
    el("figcaption", {}, `Robust accuracy against ${normName(norm)} radius`),
    el("label", { for: id, class: "inline" }, "Lines: "), picker);
  const show = () => {
    const clean = [0, report.clean_accuracy];
    // The worst case first, wide and black, so it lies underneath the line that sets it.
    const lines = [
      ...worstLine(report, norm, "worst case over every attack (the headline)", WORST, 6, null),
      ...seriesOf(report, norm, picker.value).map((s) => ({ ...s, points: [clean, ...s.points] })),
    ];
    const title = `Robust accuracy against ${normName(norm)} radius: ${picker.selectedOptions[0].textContent}`;
    for (const old of figure.querySelectorAll(":scope > svg, :scope > ul")) old.remove();
    figure.append(...draw(norm, lines, title));
  };
  picker.addEventListener("change", show);
  show();
  return figure;
}

// The worst cases of two reports on one chart, for a comparison.
export function worstCaseChart(first, second, norm, names) {
  const title = `Worst case against ${normName(norm)} radius, both checks`;
  const lines = [
    ...worstLine(first, norm, names[0], "#0072B2", 2.5, null),
    ...worstLine(second, norm, names[1], "#D55E00", 2.5, "7 4"),
  ];
  return el("figure", { class: "chart" }, el("figcaption", {}, title), ...draw(norm, lines, title));
}
