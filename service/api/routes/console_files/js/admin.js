// Admin: the token (memory only), starting a check (on the model's bundled set or an uploaded
// labelled one), following it, cancelling it.

import { api, describeError, setToken } from "./api.js";
import { byId, setStatus } from "./dom.js";
import { fillModelPicker } from "./models.js";
import { refreshChecks, showJobReport, unlockRobustness } from "./robustness.js";

const POLL_MS = 1000;
const FINISHED = new Set(["done", "failed", "cancelled", "timed_out", "interrupted"]);
let polling = null;
let currentJob = null;

// Radii as typed: numbers, or fractions such as 8/255 (divided here: the same number as the
// robustness CLI makes of it, which the report writes as 8/255 again). Anything else is sent
// as it is, for the service to refuse with its reason.
function radius(item) {
  const [numerator, denominator, ...rest] = item.split("/").map((part) => part.trim());
  if (denominator === undefined) return Number.isNaN(Number(item)) ? item : Number(item);
  const value = Number(numerator) / Number(denominator);
  return rest.length || !numerator || !denominator || !Number.isFinite(value) ? item : value;
}

function radii(text) {
  const items = text.split(",").map((s) => s.trim()).filter(Boolean);
  return items.length ? items.map(radius) : null;
}

function checkRequest() {
  const request = {
    model: byId("check-model").value,
    attacks: byId("check-attacks").value.split(",").map((s) => s.trim()).filter(Boolean),
  };
  // Every box checked: the service picks every threat model that applies to the model (no
  // transfer without a surrogate, no BPDA without a quantizer); fewer: exactly those.
  const boxes = [...document.querySelectorAll("input[name=threat]")];
  const checked = boxes.filter((c) => c.checked).map((c) => c.value);
  if (checked.length !== boxes.length) request.threat_models = checked;
  const epsilons = radii(byId("check-epsilons").value);
  if (epsilons) request.epsilons = epsilons;
  const samples = byId("check-samples").value;
  if (samples) request.samples = Number(samples);
  const budget = byId("check-budget").value;
  if (budget) request.time_budget_seconds = Number(budget);
  return request;
}

function showJob(job) {
  currentJob = job;
  byId("job").hidden = false;
  byId("job-id").textContent = job.id;
  byId("job-status").textContent = job.status + (job.cancel_requested && !FINISHED.has(job.status) ? " (cancel requested)" : "");
  const progress = job.progress || {};
  byId("job-progress").value = job.status === "done" ? 1 : progress.fraction || 0;
  byId("job-unit").textContent = progress.attack && !FINISHED.has(job.status)
    ? `${progress.done_batches} of ${progress.total_batches} batches; now ${progress.attack} / ${progress.threat_model}`
    : "";
  byId("job-error").textContent = job.error || "";
  byId("job-cancel").hidden = FINISHED.has(job.status);
  byId("job-open").hidden = !(FINISHED.has(job.status) && job.report);
}

async function poll(id) {
  try {
    const job = await api.job(id);
    showJob(job);
    if (FINISHED.has(job.status)) {
      polling = null;
      setStatus(byId("admin-status"), `Job finished: ${job.status}.`);
      refreshChecks();
      return;
    }
  } catch (error) {
    setStatus(byId("admin-status"), `Could not read the job: ${describeError(error)}`, true);
  }
  polling = setTimeout(() => poll(id), POLL_MS);
}

async function start(event) {
  event.preventDefault();
  const status = byId("admin-status");
  const upload = byId("check-upload").files[0] || null;
  setStatus(status, upload ? `Uploading “${upload.name}” and queuing the check…` : "Queuing the check…");
  try {
    const job = await api.submit(checkRequest(), upload);
    byId("check-upload").value = ""; // a set belongs to one check; the next uses the bundled one
    showJob(job);
    setStatus(status, `Check queued on ${job.samples === "uploaded" ? "the uploaded set" : job.samples}.`);
    refreshChecks();
    clearTimeout(polling);
    poll(job.id);
  } catch (error) {
    setStatus(status, `The service refused the check: ${describeError(error)}`, true);
  }
}

async function useToken(event) {
  event.preventDefault();
  const field = byId("admin-token");
  const status = byId("admin-status");
  setToken(field.value.trim());
  field.value = "";
  try {
    await api.jobs();
  } catch (error) {
    setToken(null);
    byId("check-form").hidden = true;
    unlockRobustness(false);
    const hint = error.status === 404 ? " (this service has no admin token configured)" : "";
    setStatus(status, `Token not accepted: ${describeError(error)}${hint}`, true);
    return;
  }
  setStatus(status, "Token accepted.");
  byId("check-form").hidden = false;
  unlockRobustness(true);
}

function forget() {
  setToken(null);
  clearTimeout(polling);
  byId("check-form").hidden = true;
  byId("job").hidden = true;
  unlockRobustness(false);
  setStatus(byId("admin-status"), "Token forgotten.");
}

export function setUpAdmin(modelsAnswer) {
  fillModelPicker(byId("check-model"), modelsAnswer.models, modelsAnswer.default);
  byId("token-form").addEventListener("submit", useToken);
  byId("token-forget").addEventListener("click", forget);
  byId("check-form").addEventListener("submit", start);
  byId("job-cancel").addEventListener("click", async () => {
    try {
      showJob(await api.cancel(currentJob.id));
    } catch (error) {
      setStatus(byId("admin-status"), `Could not cancel: ${describeError(error)}`, true);
    }
  });
  byId("job-open").addEventListener("click", () => showJobReport(currentJob));
}
