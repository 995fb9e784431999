// Adversarial examples kept with a report: clean, crafted, and what the quantizer made of each,
// labelled with class names. One disclosure per attack, so a long report stays short.

import { el, pngData } from "./dom.js";
import { className, formatEpsilon, normName, threatName } from "./format.js";

function picture(base64, caption) {
  if (!base64) return null;
  return el("figure", {}, el("img", { src: pngData(base64), alt: caption }), el("figcaption", {}, caption));
}

function example(item, names) {
  const fooled = item.adversarial_prediction !== item.label;
  const images = item.images || {};
  return el("div", { class: "example" },
    el("div", { class: "quad" },
      picture(images.clean, `clean, predicted ${className(item.clean_prediction, names)}`),
      picture(images.clean_quantized, "clean, quantized"),
      picture(images.adversarial, `adversarial, predicted ${className(item.adversarial_prediction, names)}`),
      picture(images.adversarial_quantized, "adversarial, quantized")),
    el("p", {}, `sample ${item.index}, label ${className(item.label, names)}: `,
      el("span", { class: fooled ? "fooled" : "held" }, fooled ? "fooled" : "held")));
}

function group(entry, names) {
  const title = `${entry.attack} / ${threatName(entry.threat_model)}, ${normName(entry.norm)} radius ${formatEpsilon(entry.epsilon)}`;
  const items = el("div", { class: "gallery" }, ...entry.examples.map((item) => example(item, names)));
  if (!entry.examples.length) items.append(el("p", {}, "The model got none of these samples right."));
  return el("div", { class: "group" }, el("h4", {}, title), items);
}

const isFooled = (item) => item.adversarial_prediction !== item.label;

export function gallery(report, names) {
  const examples = report.examples;
  const section = el("section", { class: "examples", "aria-label": "Adversarial examples" },
    el("h3", {}, "Adversarial examples"));
  if (!examples) {
    section.append(el("p", { class: "notice" },
      "This report carries no adversarial examples: it was made before reports kept them."));
    return section;
  }
  if (!examples.groups.length) {
    section.append(el("p", {}, "No examples: no unit finished, or none fitted the size limit."));
  }
  const byAttack = new Map();
  for (const entry of examples.groups) {
    if (!byAttack.has(entry.attack)) byAttack.set(entry.attack, []);
    byAttack.get(entry.attack).push(entry);
  }
  // Open the first attack that fooled the model, where one did: that is the picture to see.
  const opened = [...byAttack.values()].find((groups) => groups.some((g) => g.examples.some(isFooled)));
  for (const [attack, groups] of byAttack) {
    const shown = groups.flatMap((g) => g.examples);
    const summary = `${attack}: ${groups.length} group${groups.length === 1 ? "" : "s"}, `
      + `${shown.filter(isFooled).length} of ${shown.length} examples fooled`;
    section.append(el("details", { open: groups === opened }, el("summary", {}, summary),
      ...groups.map((entry) => group(entry, names))));
  }
  if (examples.dropped_groups) {
    section.append(el("p", { class: "muted" },
      `${examples.dropped_groups} more groups were left out to keep the report small.`));
  }
  return section;
}
