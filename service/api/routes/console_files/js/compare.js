// Two checks side by side: their worst cases against each other, then each one's headline
// and charts.

import { worstCaseChart } from "./chart.js";
import { checkName } from "./checks.js";
import { el } from "./dom.js";
import { formatEpsilon, normName, percent } from "./format.js";
import { charts, headline, summary } from "./report.js";

function points(value) {
  if (value === null) return "-";
  return `${value > 0 ? "+" : value < 0 ? "−" : "±"}${Math.abs(100 * value).toFixed(1)} points`;
}

// One row per (norm, radius) either check ran: each worst case and the difference.
function differences(first, second, names) {
  const key = (w) => `${w.norm} ${w.epsilon}`;
  const rows = new Map();
  for (const [side, report] of [[0, first], [1, second]]) {
    for (const w of report.worst_case || []) {
      if (!rows.has(key(w))) rows.set(key(w), { norm: w.norm, epsilon: w.epsilon, values: [null, null] });
      rows.get(key(w)).values[side] = w.robust_accuracy;
    }
  }
  const sorted = [...rows.values()].sort((a, b) => (a.norm === b.norm ? a.epsilon - b.epsilon : a.norm === "linf" ? -1 : 1));
  const body = sorted.map(({ norm, epsilon, values: [a, b] }) => el("tr", {},
    el("td", {}, normName(norm)),
    el("td", { class: "number" }, formatEpsilon(epsilon)),
    el("td", { class: "number" }, percent(a)),
    el("td", { class: "number" }, percent(b)),
    el("td", { class: "number" }, points(a === null || b === null ? null : b - a))));
  return el("div", { class: "scroll" }, el("table", { class: "differences" },
    el("caption", {}, "Worst-case robust accuracy at each radius, A then B, and how B differs from A."),
    el("thead", {}, el("tr", {}, ...["norm", "radius", `A: ${names[0]}`, `B: ${names[1]}`, "B − A"]
      .map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...body)));
}

// `first` and `second` are jobs with their reports, the older first.
export function compareView(first, second) {
  const names = [checkName(first), checkName(second)];
  const norms = ["linf", "l2"].filter((norm) => [first, second]
    .some((job) => (job.report.worst_case || []).some((w) => w.norm === norm)));
  const column = (job, letter) => el("div", { class: "side" },
    el("h4", {}, `${letter}: ${checkName(job)}`), summary(job.report), headline(job.report), charts(job.report));
  return el("div", { class: "compare" },
    el("h3", {}, "Comparing two checks"),
    differences(first.report, second.report, names),
    el("div", { class: "charts" }, ...norms.map((norm) => worstCaseChart(first.report, second.report, norm, names))),
    el("div", { class: "side-by-side" }, column(first, "A"), column(second, "B")));
}
