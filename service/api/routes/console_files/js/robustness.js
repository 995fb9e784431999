// Robustness: every check, newest first, filtered by model, status and words; one opened as a
// report, or two compared; either downloaded as JSON or as the HTML page.

import { api, describeError, hasToken } from "./api.js";
import { checkName, checkRow, searchText, shortId, WITH_REPORT } from "./checks.js";
import { compareView } from "./compare.js";
import { byId, clear, el, saveBlob, setStatus } from "./dom.js";
import { when } from "./format.js";
import { reportView } from "./report.js";

let models = [];
let checks = []; // as last listed, newest first
let ticked = []; // ids ticked for comparison, in the order ticked

function status(text, isError = false) {
  setStatus(byId("robustness-status"), text, isError);
}

function showList() {
  const words = byId("checks-search").value.trim().toLowerCase().split(/\s+/).filter(Boolean);
  const shown = checks.filter((job) => words.every((word) => searchText(job).includes(word)));
  const actions = { tick, open: (job) => openCheck(job.id), download };
  clear(byId("checks-body")).append(...shown.map((job) => checkRow(job, ticked.includes(job.id), actions)));
  const total = checks.length === shown.length ? "" : ` of ${checks.length}`;
  setStatus(byId("checks-count"), checks.length
    ? `${shown.length}${total} check${checks.length === 1 ? "" : "s"}, newest first.`
    : "No checks match: start one in Admin.");
  byId("checks-table").hidden = !shown.length;
  byId("checks-compare").disabled = ticked.length !== 2;
}

function tick(job, checked) {
  ticked = ticked.filter((id) => id !== job.id);
  if (checked) ticked.push(job.id);
  if (ticked.length > 2) ticked = ticked.slice(-2); // a third tick replaces the first
  showList();
}

async function loadChecks({ openNewest = false } = {}) {
  setStatus(byId("checks-count"), "Listing the checks…");
  try {
    const answer = await api.jobs({ model: byId("checks-model").value, status: byId("checks-filter-status").value });
    checks = answer.jobs;
  } catch (error) {
    checks = [];
    setStatus(byId("checks-count"), `Could not list the checks: ${describeError(error)}`, true);
    byId("checks-table").hidden = true;
    return;
  }
  ticked = ticked.filter((id) => checks.some((job) => job.id === id));
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

async function download(job, kind) {
  status(`Preparing the ${kind.toUpperCase()} report of ${shortId(job.id)}…`);
  try {
    const { blob, name } = await api.reportFile(job.id, kind);
    saveBlob(blob, name);
    status(`Saved ${name}.`);
  } catch (error) {
    status(`Could not download the report: ${describeError(error)}`, true);
  }
}

async function compare() {
  status("Reading both reports…");
  try {
    const jobs = await Promise.all(ticked.map((id) => api.job(id)));
    const missing = jobs.find((job) => !job.report);
    if (missing) {
      status(`Check ${shortId(missing.id)} (${missing.status}) has no report to compare.`, true);
      return;
    }
    jobs.sort((a, b) => (a.created_at < b.created_at ? -1 : 1));
    show(compareView(jobs[0], jobs[1]));
    status(`Comparing ${shortId(jobs[0].id)} (A) with ${shortId(jobs[1].id)} (B).`);
  } catch (error) {
    status(`Could not compare: ${describeError(error)}`, true);
  }
}

function downloadButtons(job) {
  const button = (kind) => {
    const node = el("button", { type: "button", class: "download" }, `Download ${kind.toUpperCase()}`);
    node.addEventListener("click", () => download(job, kind));
    return node;
  };
  return el("div", { class: "buttons" }, button("json"), button("html"));
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
    ticked = [];
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
  for (const value of [...WITH_REPORT, "queued", "running", "failed"]) {
    byId("checks-filter-status").append(el("option", { value }, value));
  }
}
