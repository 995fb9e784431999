// The list of checks: the report published with each model's weights first, then one row per
// check, newest first, with what it asked and found.

import { el } from "./dom.js";
import { formatEpsilon, normName, percent, when } from "./format.js";

// Statuses whose check may carry a report (a partial one, unless done).
export const WITH_REPORT = new Set(["done", "timed_out", "cancelled", "interrupted"]);

export function shortId(id) {
  return id.slice(0, 8);
}

// A published report stands among the checks under an id of its own, with the fields of a
// job that the list, the report view and the comparison read.
const PUBLISHED_ID = "published:";

export function publishedId(model) {
  return `${PUBLISHED_ID}${model}`;
}

export function publishedModel(id) {
  return id.startsWith(PUBLISHED_ID) ? id.slice(PUBLISHED_ID.length) : null;
}

// The answer of /admin/models/{name}/published-report (or a summary of /admin/models) as a job.
export function publishedEntry(answer) {
  return {
    ...answer,
    id: publishedId(answer.model),
    published: true,
    status: "published",
    created_at: answer.started_at,
    request: answer.request || (answer.report || {}).request || {},
  };
}

// How the status line and the comparison name a check or a published report.
export function entryLabel(job) {
  return job.published ? `the published report of ${job.model}` : shortId(job.id);
}

export function checkName(job) {
  if (job.published) return `${job.model}, published report (${job.file})`;
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

// The words a search matches: what the row shows, and the whole id (a published report's file).
export function searchText(job) {
  const request = job.request || {};
  return [job.id, job.model, job.status, job.samples, job.file || "", ...(request.attacks || []),
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

// The published report of a model, as the list's first rows show it; `actions` as above.
export function publishedRow(entry, ticked, actions) {
  const request = entry.request || {};
  const tick = el("input", { type: "checkbox", checked: ticked,
    "aria-label": `Compare the published report of ${entry.model}` });
  tick.addEventListener("change", () => actions.tick(entry, tick.checked));
  const button = (text, label, handler) => {
    const node = el("button", { type: "button", "aria-label": `${label} ${entry.model}` }, text);
    node.addEventListener("click", handler);
    return node;
  };
  const standing = entry.in_gauges ? "published; the dashboard shows it" : "published; a check replaced it";
  return el("tr", { "data-published": entry.model },
    el("td", {}, tick),
    el("td", {}, when(entry.started_at), el("br", {}), el("code", { title: entry.file }, "published")),
    el("td", {}, entry.model),
    el("td", { class: "job-published" }, standing),
    el("td", {}, entry.samples ?? "-"),
    el("td", {}, (request.attacks || []).join(", ")),
    el("td", {}, radii(request)),
    el("td", {}, worstCase(entry)),
    el("td", { class: "actions" },
      button("Open", "Open the published report of", () => actions.open(entry)),
      button("JSON", "Download the published JSON report of", () => actions.download(entry, "json"))));
}
