// The list of checks: one row per check, newest first, with what it asked and found.

import { el } from "./dom.js";
import { formatEpsilon, normName, percent, when } from "./format.js";

// Statuses whose check may carry a report (a partial one, unless done).
export const WITH_REPORT = new Set(["done", "timed_out", "cancelled", "interrupted"]);

export function shortId(id) {
  return id.slice(0, 8);
}

export function checkName(job) {
  return `${job.model}, ${when(job.created_at)} (${shortId(job.id)})`;
}

function radii(request) {
  const parts = [];
  if ((request.epsilons || []).length) parts.push(`${normName("linf")} ${request.epsilons.map(formatEpsilon).join(", ")}`);
  if ((request.l2_epsilons || []).length) parts.push(`L2 ${request.l2_epsilons.map(formatEpsilon).join(", ")}`);
  return parts.join("; ") || "the dataset's";
}

function worstCase(job) {
  const entries = job.worst_case || [];
  if (!entries.length) return "-";
  const norms = new Set(entries.map((w) => w.norm));
  return entries.map((w) => `${norms.size > 1 ? `${normName(w.norm)} ` : ""}${formatEpsilon(w.epsilon)}: ${percent(w.robust_accuracy)}`)
    .join(" · ");
}

function samples(job) {
  const count = (job.request || {}).samples;
  if (job.samples === "uploaded") return count ? `${count} uploaded` : "uploaded";
  return count ? `${count} of ${job.samples}` : job.samples;
}

// The words a search matches: what the row shows, and the whole id.
export function searchText(job) {
  const request = job.request || {};
  return [job.id, job.model, job.status, job.samples, ...(request.attacks || []),
    ...(request.threat_models || []), radii(request), job.created_at || ""].join(" ").toLowerCase();
}

// A row; `actions` are { tick(job, checked), open(job), download(job, kind) }.
export function checkRow(job, ticked, actions) {
  const request = job.request || {};
  const name = shortId(job.id);
  const reportable = WITH_REPORT.has(job.status);
  const tick = el("input", { type: "checkbox", checked: ticked, disabled: !reportable,
    "aria-label": `Compare check ${name}` });
  tick.addEventListener("change", () => actions.tick(job, tick.checked));
  const button = (text, label, handler) => {
    const node = el("button", { type: "button", disabled: !reportable, "aria-label": `${label} ${name}` }, text);
    node.addEventListener("click", handler);
    return node;
  };
  return el("tr", { "data-job": job.id },
    el("td", {}, tick),
    el("td", {}, when(job.created_at), el("br", {}), el("code", { title: job.id }, name)),
    el("td", {}, job.model),
    el("td", { class: `job-${job.status}` }, job.status),
    el("td", {}, samples(job)),
    el("td", {}, (request.attacks || []).join(", ")),
    el("td", {}, radii(request)),
    el("td", {}, worstCase(job)),
    el("td", { class: "actions" },
      button("Open", "Open check", () => actions.open(job)),
      button("JSON", "Download the JSON report of check", () => actions.download(job, "json")),
      button("HTML", "Download the HTML report of check", () => actions.download(job, "html"))));
}
