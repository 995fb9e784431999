// The loaded models: a table, and the model pickers of the other views.

import { api, describeError } from "./api.js";
import { byId, clear, el, setStatus } from "./dom.js";
import { percent } from "./format.js";

function defenceCells(model) {
  const defence = model.defence || {};
  const kind = defence.kind || "none";
  const names = { tq: "trainable quantization (TQ)", cq: "constant quantization (CQ)", none: "none" };
  const thresholds = (defence.thresholds || []).map((t) => Number(t).toFixed(4)).join(", ");
  return [
    el("td", {}, names[kind] || kind),
    el("td", { class: "number" }, defence.levels ?? "-"),
    el("td", {}, thresholds || "-"),
  ];
}

function row(model) {
  return el(
    "tr",
    {},
    el("th", { scope: "row" }, model.name),
    el("td", {}, model.dataset || "?"),
    el("td", {}, model.architecture || "?"),
    el("td", {}, (model.input_shape || []).join("×") || "?"),
    el("td", { class: "number" }, (model.class_names || []).length || "?"),
    ...defenceCells(model),
    el("td", { class: "number" }, percent(model.clean_accuracy)),
  );
}

export function fillModelPicker(select, models, preferred) {
  clear(select);
  for (const model of models) {
    const label = `${model.name} (${model.dataset || "?"})`;
    select.append(el("option", { value: model.name, selected: model.name === preferred }, label));
  }
}

export async function showModels() {
  const status = byId("models-status");
  const table = byId("models-table");
  try {
    const answer = await api.models();
    const body = clear(table.querySelector("tbody"));
    for (const model of answer.models) body.append(row(model));
    table.hidden = false;
    setStatus(status, answer.ready ? "" : "Models are loaded but still warming up.");
    return answer;
  } catch (error) {
    setStatus(status, `Could not list the models: ${describeError(error)}`, true);
    return { default: null, models: [] };
  }
}
