// Classify: pick, drop or draw an image; show what the model took in, saw and answered.

import { api, describeError } from "./api.js";
import { byId, clear, el, pngData, setStatus } from "./dom.js";
import { makeDrawingPad } from "./drawing.js";
import { fillModelPicker } from "./models.js";

const TOP_CLASSES = 5;

function showResult(answer, clientSeconds) {
  byId("input-image").src = answer.input_image ? pngData(answer.input_image.data) : "";
  byId("quantized-image").src = answer.quantized_image ? pngData(answer.quantized_image.data) : "";
  byId("classify-label").textContent = `${answer.class_name} (class ${answer.label})`;
  const top = Object.entries(answer.probabilities)
    .sort((a, b) => b[1] - a[1])
    .slice(0, TOP_CLASSES);
  const list = clear(byId("classify-top"));
  for (const [name, probability] of top) {
    const label = `${(100 * probability).toFixed(2)}%`;
    list.append(
      el(
        "li",
        {},
        el("span", {}, name),
        el("meter", { min: 0, max: 1, value: probability, "aria-label": `class ${name}: ${label}` }),
        el("span", { class: "number" }, label),
      ),
    );
  }
  const server = answer.timings_seconds ? answer.timings_seconds.total * 1000 : null;
  const parts = [];
  if (server !== null) parts.push(`${server.toFixed(1)} ms in the service`);
  parts.push(`${(clientSeconds * 1000).toFixed(0)} ms round trip`);
  if (answer.input && answer.input.resized) parts.push("the image was resized to the model's input");
  byId("classify-timing").textContent = `${parts.join("; ")}.`;
  byId("classify-result").hidden = false;
}

async function classify(blob, what) {
  const status = byId("classify-status");
  setStatus(status, `Classifying ${what}…`);
  const started = performance.now();
  try {
    const answer = await api.classify(byId("classify-model").value, blob);
    showResult(answer, (performance.now() - started) / 1000);
    setStatus(status, `Classified ${what} with ${answer.model.name}.`);
  } catch (error) {
    byId("classify-result").hidden = true;
    setStatus(status, `Could not classify ${what}: ${describeError(error)}`, true);
  }
}

function wireDropZone(zone) {
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) classify(file, `“${file.name}”`);
  });
}

export function setUpClassify(modelsAnswer) {
  const models = modelsAnswer.models;
  const picker = byId("classify-model");
  fillModelPicker(picker, models, modelsAnswer.default);
  const pad = makeDrawingPad(byId("drawing-pad"));
  const showPad = () => {
    const chosen = models.find((m) => m.name === picker.value);
    byId("drawing").hidden = !(chosen && chosen.dataset === "mnist");
  };
  picker.addEventListener("change", showPad);
  showPad();
  byId("classify-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) classify(file, `“${file.name}”`);
  });
  wireDropZone(byId("drop-zone"));
  byId("drawing-clear").addEventListener("click", () => pad.clear());
  byId("drawing-classify").addEventListener("click", async () => {
    classify(await pad.toBlob(), "the drawing");
  });
}
