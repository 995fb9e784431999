// The console's entry point: list the models, then set up each view.

import { setUpAdmin } from "./admin.js";
import { setUpClassify } from "./classify.js";
import { showModels } from "./models.js";
import { setUpRobustness } from "./robustness.js";

async function start() {
  const models = await showModels();
  setUpClassify(models);
  setUpRobustness(models);
  setUpAdmin(models);
  document.body.dataset.ready = "true";
}

start();
