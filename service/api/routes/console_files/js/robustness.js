// Robustness: a model's latest report; the headline, the chart, the flags, the examples.

import { api, describeError, hasToken } from "./api.js";
import { accuracyChart, THREAT_NAMES } from "./chart.js";
import { byId, clear, el, formatEpsilon, percent, setStatus } from "./dom.js";
import { gallery } from "./gallery.js";
import { fillModelPicker } from "./models.js";

// What each flag means for someone deciding whether to trust the numbers.
const FLAG_WORDS = {
  zero_or_missing_gradients:
    "The quantizer's staircase has no usable gradient, so an attacker who differentiates through the model as served learns nothing. Naive white-box numbers then measure the attack's blindness, not the model's robustness.",
  naive_far_above_bpda:
    "Naive white-box accuracy is far above BPDA's (which routes gradients around the staircase). The naive number is the quantizer hiding gradients; only the BPDA, transfer and gradient-free numbers count.",
  gradient_free_beats_gradient:
    "An attack that only queries the model beats attacks that see its gradients: those gradients point nowhere useful, so the gradient attacks' numbers overstate robustness.",
  accuracy_not_near_zero_at_large_epsilon:
    "At a radius that allows any image at all, accuracy should be near zero. It is not: the attack is failing, not the model succeeding.",
  accuracy_not_falling_with_epsilon:
    "A larger radius should never help the model, and a white-box attack should do something at the largest radius. Here it did not: suspect the attack, not the model.",
};

function headline(report) {
  const rows = (report.worst_case || []).map((w) =>
    el("tr", {},
      el("td", {}, w.norm === "linf" ? "L-inf" : "L2"),
      el("td", { class: "number" }, formatEpsilon(w.epsilon)),
      el("td", { class: "number" }, el("strong", {}, percent(w.robust_accuracy))),
      el("td", {}, w.attack),
      el("td", {}, THREAT_NAMES[w.threat_model] || w.threat_model),
      el("td", { class: "number" }, `${w.samples}${w.complete ? "" : " (cut short)"}`)));
  return el("div", { class: "scroll" }, el("table", { class: "headline" },
    el("caption", {}, "Worst case: the lowest robust accuracy over every attack and threat model at each radius."),
    el("thead", {}, el("tr", {}, ...["norm", "radius", "worst-case robust accuracy", "attack",
      "threat model", "samples"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...rows)));
}

function flags(report) {
  const list = el("ul", { class: "flags" });
  for (const flag of report.masking_flags || []) {
    const state = flag.fired === true ? ["FIRED", "flag-fired"]
      : flag.fired === false ? ["clear", "flag-clear"] : ["not checked", "muted"];
    const evidence = (flag.evidence || []).slice(0, 4).map((e) => el("li", {}, e));
    list.append(el("li", {},
      el("span", { class: state[1] }, state[0]), " ", el("code", {}, flag.name), ": ",
      FLAG_WORDS[flag.name] || flag.meaning,
      evidence.length ? el("ul", { class: "muted" }, ...evidence) : null));
  }
  return el("section", { "aria-label": "Gradient-masking flags" },
    el("h3", {}, "Gradient-masking flags"),
    el("p", {}, "A fired flag means some numbers below are an artefact of the attack, not robustness. ",
      "Naive white-box attacks on a quantized model are blind (the staircase has zero gradient), so ",
      "their high accuracies must not be trusted: read the worst case, which also counts BPDA, ",
      "transfer and gradient-free attacks."),
    list);
}

// Whether the check met the bar that lets a check set the dashboard's figures, and why not.
function qualification(report) {
  const judged = report.qualification;
  if (!judged) return el("p", {}, "This report was made before checks were held to a bar; the dashboard's figures do not come from it.");
  if (judged.qualifying) return el("p", {}, "This check meets the bar: the dashboard's robustness figures come from it.");
  return el("div", {},
    el("p", {}, "This check does not meet the bar, so the dashboard's robustness figures do not come from it:"),
    el("ul", {}, ...judged.reasons.map((reason) => el("li", {}, reason))));
}

export function renderReport(report, source) {
  const target = clear(byId("robustness-report"));
  const model = report.model || {};
  const quantizer = model.quantizer || {};
  target.append(
    el("p", {}, `Model ${model.name} (${model.dataset}), quantizer ${quantizer.kind || "none"}`,
      quantizer.levels ? `, ${quantizer.levels} levels` : "",
      `; ${report.samples} samples; clean accuracy ${percent(report.clean_accuracy)}; `,
      `report ${report.status}, started ${report.started_at}, ${report.seconds} s. ${source}`),
    qualification(report),
    el("h3", {}, "Headline"),
    headline(report),
    el("h3", {}, "Accuracy against radius"),
  );
  for (const norm of ["linf", "l2"]) {
    if ((report.results || []).some((r) => r.norm === norm && r.epsilon !== null && !r.sanity)) {
      target.append(accuracyChart(report, norm));
    }
  }
  target.append(flags(report), gallery(report));
}

async function loadLatest() {
  const status = byId("robustness-status");
  const model = byId("robustness-model").value;
  clear(byId("robustness-report"));
  setStatus(status, `Looking for the latest report on ${model}…`);
  try {
    const done = (await api.jobs("done")).jobs.filter((job) => job.model === model);
    if (!done.length) {
      setStatus(status, `No finished check of ${model} yet: start one in Admin.`);
      return;
    }
    const job = await api.job(done[0].id);
    renderReport(job.report, `Job ${job.id}, finished ${job.finished_at}.`);
    setStatus(status, "");
  } catch (error) {
    setStatus(status, `Could not load the report: ${describeError(error)}`, true);
  }
}

export function showJobReport(job) {
  byId("robustness-model").value = job.model;
  renderReport(job.report, `Job ${job.id} (${job.status}), finished ${job.finished_at}.`);
  setStatus(byId("robustness-status"), "");
  byId("robustness").scrollIntoView();
}

export function unlockRobustness(unlocked) {
  byId("robustness-locked").hidden = unlocked;
  byId("robustness-view").hidden = !unlocked;
  if (unlocked && hasToken()) loadLatest();
  if (!unlocked) clear(byId("robustness-report"));
}

export function setUpRobustness(modelsAnswer) {
  fillModelPicker(byId("robustness-model"), modelsAnswer.models, modelsAnswer.default);
  byId("robustness-model").addEventListener("change", loadLatest);
  byId("robustness-reload").addEventListener("click", loadLatest);
}
