// Adversarial examples kept with a report: clean, crafted, and what the quantizer made of each.

import { el, formatEpsilon, pngData } from "./dom.js";
import { THREAT_NAMES } from "./chart.js";

function picture(base64, caption) {
  if (!base64) return null;
  return el("figure", {}, el("img", { src: pngData(base64), alt: caption }), el("figcaption", {}, caption));
}

function example(item) {
  const fooled = item.adversarial_prediction !== item.label;
  const images = item.images || {};
  return el(
    "div",
    { class: "example" },
    el(
      "div",
      { class: "quad" },
      picture(images.clean, `clean, predicted ${item.clean_prediction}`),
      picture(images.clean_quantized, "clean, quantized"),
      picture(images.adversarial, `adversarial, predicted ${item.adversarial_prediction}`),
      picture(images.adversarial_quantized, "adversarial, quantized"),
    ),
    el(
      "p",
      {},
      `sample ${item.index}, label ${item.label}: `,
      el("span", { class: fooled ? "fooled" : "held" }, fooled ? "fooled" : "held"),
    ),
  );
}

export function gallery(report) {
  const examples = report.examples;
  const section = el("section", { "aria-label": "Adversarial examples" }, el("h3", {}, "Adversarial examples"));
  if (!examples) {
    section.append(el("p", { class: "notice" },
      "This report carries no adversarial examples: it was made before reports kept them."));
    return section;
  }
  if (!examples.groups.length) {
    section.append(el("p", {}, "No examples: no unit finished, or none fitted the size limit."));
  }
  // Open the first group where the attack won, where there is one: that is the picture to see.
  const fooling = examples.groups.findIndex((g) => g.examples.some((e) => e.adversarial_prediction !== e.label));
  const opened = Math.max(fooling, 0);
  for (const [index, group] of examples.groups.entries()) {
    const threat = THREAT_NAMES[group.threat_model] || group.threat_model;
    const title = `${group.attack} / ${threat}, ${group.norm === "linf" ? "L-inf" : "L2"} radius ${formatEpsilon(group.epsilon)}`;
    const details = el("details", { open: index === opened }, el("summary", {}, `${title} (${group.examples.length})`));
    const items = el("div", { class: "gallery" }, ...group.examples.map(example));
    if (!group.examples.length) items.append(el("p", {}, "The model got none of these samples right."));
    details.append(items);
    section.append(details);
  }
  if (examples.dropped_groups) {
    section.append(el("p", { class: "muted" },
      `${examples.dropped_groups} more groups were left out to keep the report small.`));
  }
  return section;
}
