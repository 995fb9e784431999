"""What each served model offers the job system: its transfer surrogate and its evaluation
set (the checkpoint folder's own ``eval-set.npz``, else its dataset's bundled one), found
once when the job manager opens."""

from __future__ import annotations

import logging
from typing import Any

from models.checkpoint import CheckpointError, read_manifest
from models.evalset import EvalSetError, default_eval_set, load_eval_set
from robustness.request import surrogate_problem
from robustness.subjects import default_surrogate
from service.inference.classifier import Classifier
from service.inference.pool import StartupError
from service.jobs.planning import Target
from service.settings import ServiceSettings

log = logging.getLogger(__name__)


def describe_target(classifier: Classifier, settings: ServiceSettings) -> Target:
    """What a served model offers the job system: its surrogate and its bundled samples."""
    manifest = classifier.manifest
    surrogate, surrogate_problem = find_surrogate(classifier, settings)
    eval_path = default_eval_set(classifier.path, manifest.dataset, settings.eval_dir)
    try:
        size, eval_problem = len(load_eval_set(eval_path).labels), None
    except EvalSetError as exc:
        size, eval_problem = 0, str(exc)
        log.warning("model %s: no evaluation set: %s", classifier.name, exc)
    return Target(
        name=classifier.name,
        dataset=manifest.dataset,
        checkpoint=classifier.path.resolve(),
        weights_sha256=manifest.weights_sha256,
        input_shape=tuple(manifest.input_shape),  # type: ignore[arg-type]
        classes=len(manifest.class_names),
        quantized=manifest.quantizer.get("kind", "none") != "none",
        surrogate=surrogate,
        surrogate_problem=surrogate_problem,
        eval_set=eval_path if eval_problem is None else None,
        eval_set_size=size,
        eval_set_problem=eval_problem,
    )


def find_surrogate(classifier: Classifier, settings: ServiceSettings) -> tuple[Any, str | None]:
    """The undefended checkpoint transfer attacks craft on, or why there is none.

    ``QUSEC_ROBUSTNESS_SURROGATE`` serves the models of its own dataset; otherwise the
    suite's own rule applies: ``<dataset>-undefended`` beside the served checkpoint.
    """
    manifest = classifier.manifest
    configured = settings.robustness_surrogate
    if configured is not None:
        try:
            configured_manifest = read_manifest(configured)
        except CheckpointError as exc:
            raise StartupError(f"QUSEC_ROBUSTNESS_SURROGATE: {exc}") from None
        path = configured if configured_manifest.dataset == manifest.dataset else None
    else:
        path = None
    path = path or default_surrogate(classifier.path, manifest.dataset)
    if path is None:
        return None, (
            f"no undefended surrogate: no checkpoint folder {manifest.dataset}-undefended "
            "beside the served checkpoint and QUSEC_ROBUSTNESS_SURROGATE is not set"
        )
    try:
        found = read_manifest(path)
    except CheckpointError as exc:
        return None, f"the surrogate is unreadable ({exc})"
    if found.quantizer.get("kind", "none") != "none":
        return None, f"the surrogate {path} is defended; transfer needs an undefended model"
    problem = surrogate_problem(
        manifest.weights_sha256,
        manifest.dataset,
        found.weights_sha256,
        found.dataset,
        same_quantizer=found.quantizer == manifest.quantizer,
        target_io=(tuple(manifest.input_shape), len(manifest.class_names)),
        surrogate_io=(tuple(found.input_shape), len(found.class_names)),
    )
    if problem is not None:
        return None, f"{path}: {problem}"
    return path.resolve(), None
