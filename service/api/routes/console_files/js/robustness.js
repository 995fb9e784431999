// Robustness: the report published with each model's weights, then every check, newest first,
// filtered by model, status and words; one opened as a report, or two compared; either
// downloaded as JSON (a check also as the HTML page).

import { api, describeError, hasToken } from "./api.js";
import {
  checkName, checkRow, entryLabel, publishedEntry, publishedId, publishedModel, publishedRow, searchText,
  shortId, WITH_REPORT,
} from "./checks.js";
import { compareView } from "./compare.js";
import { byId, clear, el, saveBlob, setStatus } from "./dom.js";
import { when } from "./format.js";
import { publishedStanding, reportView } from "./report.js";

const PUBLISHED = "published"; // the status filter's value that lists only published reports
let models = [];
let published = []; // each model's published report (as a job: checks.js), from /admin/models
let checks = []; // as last listed, newest first
let ticked = []; // ids ticked for comparison, in the order ticked

function status(text, isError = false) {
  setStatus(byId("robustness-status"), text, isError);
}

function showList() {
  const words = byId("checks-search").value.trim().toLowerCase().split(/\s+/).filter(Boolean);
  const matches = (job) => words.every((word) => searchText(job).includes(word));
  const shown = checks.filter(matches);
  const model = byId("checks-model").value;
  const filter = byId("checks-filter-status").value;
  const shownPublished = published.filter((entry) =>
    (!model || entry.model === model) && (!filter || filter === PUBLISHED) && matches(entry));
  const actions = { tick, open: openEntry, download };
  clear(byId("published-body")).append(...shownPublished.map((entry) =>
    publishedRow(entry, ticked.includes(entry.id), actions)));
  clear(byId("checks-body")).append(...shown.map((job) => checkRow(job, ticked.includes(job.id), actions)));
  setStatus(byId("checks-count"), count(shown, shownPublished, filter));
  byId("checks-table").hidden = !shown.length && !shownPublished.length;
  byId("checks-compare").disabled = ticked.length !== 2;
}

function count(shown, shownPublished, filter) {
  const one = shownPublished.length === 1;
  if (filter === PUBLISHED) return `${shownPublished.length} published report${one ? "" : "s"}.`;
  const total = checks.length === shown.length ? "" : ` of ${checks.length}`;
  const first = shownPublished.length
    ? ` The report${one ? "" : "s"} published with the served weights come${one ? "s" : ""} first.`
    : "";
  return (checks.length
    ? `${shown.length}${total} check${checks.length === 1 ? "" : "s"}, newest first.`
    : "No checks match: start one in Admin.") + first;
}

function tick(job, checked) {
  ticked = ticked.filter((id) => id !== job.id);
  if (checked) ticked.push(job.id);
  if (ticked.length > 2) ticked = ticked.slice(-2); // a third tick replaces the first
  showList();
}

// Each model's published report, summarised in /admin/models; none when that cannot be read
// (the checks are listed all the same).
async function loadPublished() {
  try {
    const answer = await api.adminModels();
    return answer.models.filter((model) => model.published_report)
      .map((model) => publishedEntry({ model: model.name, ...model.published_report }));
  } catch (error) {
    status(`Could not read the published reports: ${describeError(error)}`, true);
    return [];
  }
}

// The listing in flight. A newer one (another filter, a reload) cancels it, so that an
// older answer arriving late never replaces the list the filters now ask for.
let listing = null;

async function loadChecks({ openNewest = false } = {}) {
  listing?.abort();
  const mine = new AbortController();
  listing = mine;
  setStatus(byId("checks-count"), "Listing the checks…");
  const filter = byId("checks-filter-status").value;
  const query = { model: byId("checks-model").value, status: filter, signal: mine.signal };
  try {
    const [answer, found] = await Promise.all([
      filter === PUBLISHED ? { jobs: [] } : api.jobs(query),
      loadPublished(),
    ]);
    if (mine.signal.aborted) return;
    checks = answer.jobs;
    published = found;
  } catch (error) {
    if (mine.signal.aborted) return;
    checks = [];
    setStatus(byId("checks-count"), `Could not list the checks: ${describeError(error)}`, true);
    byId("checks-table").hidden = true;
    return;
  }
  const listed = [...checks, ...published];
  ticked = ticked.filter((id) => listed.some((job) => job.id === id));
  showList();
  const newest = checks.find((job) => job.status === "done");
  if (openNewest && newest) await openCheck(newest.id);
}

function show(node) {
  clear(byId("robustness-report")).append(node);
}

async function openCheck(id) {
  status(`Opening check ${shortId(id)}…`);
  try {
    const job = await api.job(id);
    if (!job.report) {
      status(`Check ${shortId(id)} (${job.status}) has no report${job.error ? `: ${job.error}` : "."}`, true);
      return;
    }
    showJobReport(job, false);
  } catch (error) {
    status(`Could not open the check: ${describeError(error)}`, true);
  }
}

// A published report in full, as a job (checks.js); a check as the service shows it.
async function entry(id) {
  const model = publishedModel(id);
  return model === null ? api.job(id) : publishedEntry(await api.publishedReport(model));
}

function openEntry(job) {
  return job.published ? openPublished(job.model) : openCheck(job.id);
}

async function openPublished(model) {
  status(`Opening the published report of ${model}…`);
  try {
    showPublishedReport(await entry(publishedId(model)));
  } catch (error) {
    status(`Could not open the published report: ${describeError(error)}`, true);
  }
}

// The report as the service has it, as a file; a published one is saved as it was read.
async function reportFile(job, kind) {
  if (!job.published) return api.reportFile(job.id, kind);
  const { report } = job.report ? job : await entry(job.id);
  const text = `${JSON.stringify(report, null, 2)}\n`;
  return { blob: new Blob([text], { type: "application/json" }), name: job.file.split("/").pop() };
}

async function download(job, kind) {
  status(`Preparing the ${kind.toUpperCase()} report of ${entryLabel(job)}…`);
  try {
    const { blob, name } = await reportFile(job, kind);
    saveBlob(blob, name);
    status(`Saved ${name}.`);
  } catch (error) {
    status(`Could not download the report: ${describeError(error)}`, true);
  }
}

async function compare() {
  status("Reading both reports…");
  try {
    const jobs = await Promise.all(ticked.map(entry));
    const missing = jobs.find((job) => !job.report);
    if (missing) {
      status(`Check ${shortId(missing.id)} (${missing.status}) has no report to compare.`, true);
      return;
    }
    jobs.sort((a, b) => (new Date(a.created_at) < new Date(b.created_at) ? -1 : 1));
    show(compareView(jobs[0], jobs[1]));
    status(`Comparing ${entryLabel(jobs[0])} (A) with ${entryLabel(jobs[1])} (B).`);
  } catch (error) {
    status(`Could not compare: ${describeError(error)}`, true);
  }
}

function downloadButtons(job, kinds = ["json", "html"]) {
  const button = (kind) => {
    const node = el("button", { type: "button", class: "download" }, `Download ${kind.toUpperCase()}`);
    node.addEventListener("click", () => download(job, kind));
    return node;
  };
  return el("div", { class: "buttons" }, ...kinds.map(button));
}

function showPublishedReport(job) {
  show(el("article", { "aria-label": `Published report of ${job.model}` },
    el("h3", {}, `Published report of ${job.model}: ${job.file}`),
    el("p", { class: "muted" }, `Made on the weights this service serves (sha256 ${job.weights_sha256.slice(0, 12)}…); `,
      `finished ${when(job.finished_at)}.`),
    downloadButtons(job, ["json"]),
    reportView(job.report, models, publishedStanding(job.in_gauges))));
  status("");
}

export function showJobReport(job, scroll = true) {
  show(el("article", { "aria-label": `Report of check ${shortId(job.id)}` },
    el("h3", {}, `Check ${checkName(job)}: ${job.status}`),
    el("p", { class: "muted" }, `Samples: ${job.samples}; finished ${when(job.finished_at)}.`),
    downloadButtons(job),
    reportView(job.report, models)));
  status("");
  if (scroll) byId("robustness").scrollIntoView();
}

export function refreshChecks() {
  if (hasToken() && !byId("robustness-view").hidden) loadChecks();
}

export function unlockRobustness(unlocked) {
  byId("robustness-locked").hidden = unlocked;
  byId("robustness-view").hidden = !unlocked;
  if (unlocked && hasToken()) loadChecks({ openNewest: !byId("robustness-report").hasChildNodes() });
  if (!unlocked) {
    checks = [];
    published = [];
    ticked = [];
    clear(byId("published-body"));
    clear(byId("checks-body"));
    clear(byId("robustness-report"));
  }
}

export function setUpRobustness(modelsAnswer) {
  models = modelsAnswer.models;
  const picker = byId("checks-model");
  for (const model of models) picker.append(el("option", { value: model.name }, model.name));
  picker.addEventListener("change", () => loadChecks());
  byId("checks-filter-status").addEventListener("change", () => loadChecks());
  byId("checks-search").addEventListener("input", showList);
  byId("checks-reload").addEventListener("click", () => loadChecks());
  byId("checks-compare").addEventListener("click", compare);
  for (const value of [...WITH_REPORT, "queued", "running", "failed", PUBLISHED]) {
    byId("checks-filter-status").append(el("option", { value }, value));
  }
}
