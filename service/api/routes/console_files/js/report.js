// One report: what was checked, the headline, the charts, the flags, the examples.

import { accuracyChart } from "./chart.js";
import { el } from "./dom.js";
import { classNamesOf, formatEpsilon, normName, percent, radiiAsGiven, threatName, when } from "./format.js";
import { gallery } from "./gallery.js";

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

export function requestedRadii(report) {
  const request = report.request || {};
  return [["linf", request.epsilons || []], ["l2", request.l2_epsilons || []]]
    .filter(([, radii]) => radii.length)
    .map(([norm, radii]) => `${normName(norm)} ${radii.map(formatEpsilon).join(", ")}`)
    .join("; ");
}

export function summary(report) {
  const model = report.model || {};
  const quantizer = model.quantizer || {};
  const evalSet = report.eval_set || {};
  const defence = quantizer.kind && quantizer.kind !== "none"
    ? `${quantizer.kind}, ${quantizer.levels} levels` : "none";
  return el("ul", { class: "summary" },
    el("li", {}, "Model ", el("code", {}, model.name || "?"), ` (${model.dataset || "?"}), quantizer ${defence}`),
    el("li", {}, `${report.samples} samples of `, el("code", {}, evalSet.name || "?"),
      "; clean accuracy ", el("strong", {}, percent(report.clean_accuracy))),
    el("li", {}, `Radii requested: ${requestedRadii(report) || "-"}`),
    el("li", {}, `Report ${report.status}; started ${when(report.started_at)}, ${report.seconds} s`));
}

export function headline(report) {
  const rows = (report.worst_case || []).map((w) =>
    el("tr", {},
      el("td", {}, normName(w.norm)),
      el("td", { class: "number" }, formatEpsilon(w.epsilon)),
      el("td", { class: "number" }, el("strong", {}, percent(w.robust_accuracy))),
      el("td", {}, w.attack),
      el("td", {}, threatName(w.threat_model)),
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
    const evidence = (flag.evidence || []).slice(0, 4).map((e) => el("li", {}, radiiAsGiven(e, report)));
    list.append(el("li", {},
      el("span", { class: state[1] }, state[0]), " ", el("code", {}, flag.name), ": ",
      FLAG_WORDS[flag.name] || flag.meaning,
      evidence.length ? el("ul", { class: "muted" }, ...evidence) : null));
  }
  return el("section", { "aria-label": "Gradient-masking flags" },
    el("h3", {}, "Gradient-masking flags"),
    el("p", {}, "A fired flag means some numbers above are an artefact of the attack, not robustness. ",
      "Naive white-box attacks on a quantized model are blind (the staircase has zero gradient), so ",
      "their high accuracies must not be trusted: read the worst case, which also counts BPDA, ",
      "transfer and gradient-free attacks."),
    list);
}

export function charts(report) {
  const norms = ["linf", "l2"].filter((norm) =>
    (report.results || []).some((r) => r.norm === norm && r.epsilon !== null && !r.sanity));
  return el("div", { class: "charts" }, ...norms.map((norm) => accuracyChart(report, norm)));
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

// Where a published report stands: made on the served weights by the suite's own run, it
// sets the dashboard's figures until a check that meets the bar finishes.
export function publishedStanding(inGauges) {
  return el("p", {}, inGauges
    ? "This report was published with the served weights: the dashboard's robustness figures come from it until a check that meets the bar finishes."
    : "This report was published with the served weights. A check that meets the bar has finished since: the dashboard's robustness figures come from that check.");
}

// The whole report; `models` (the /models answer's list) names the classes of older reports;
// `standing` says where it stands when it is not a check's (a published report's).
export function reportView(report, models, standing = null) {
  return el("div", { class: "report" },
    summary(report),
    standing || qualification(report),
    el("h3", {}, "Headline"), headline(report),
    el("h3", {}, "Accuracy against radius"), charts(report),
    flags(report),
    gallery(report, classNamesOf(report, models)));
}
