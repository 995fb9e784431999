"""Wrap an exported program into a checkpoint folder: ``program.pt2`` plus ``manifest.json``.

Everything the program does not say about itself is declared by the person importing it
(input shape, class names, normalization, defence) and checked here before anything is
written: the program must run on a zero batch of the declared shape and give one logit per
declared class. The folder then loads with ``load_checkpoint`` like any other. With
``--eval-folder`` it also keeps a labelled evaluation set (``eval-set.npz``), which the
robustness suite and the service's checks use by default.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from models.checkpoint import (
    MANIFEST_FILE,
    PROGRAM_FILE,
    CheckpointError,
    Manifest,
    replacing_folder,
    sha256_file,
)
from models.evalset import CHECKPOINT_EVAL_SET, read_folder_eval_set, write_eval_set
from models.exported import load_program
from models.manifest_schema import CHANNELS, EXPORTED_ARCHITECTURE, MAX_SIDE, manifest_problem
from models.quantizers import build_quantizer


@dataclass(frozen=True)
class ProgramImport:
    program: Path
    out: Path
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    defence: str = "none"
    levels: int = 2
    thresholds: tuple[float, ...] | None = None
    dataset: str = "custom"
    eval_folder: Path | None = None  # labelled images written as the folder's eval-set.npz


def import_program(request: ProgramImport, created_at: str = "") -> Manifest:
    """Check the program against the declaration and write the checkpoint folder."""
    _check_declaration(request)
    normalization = _declared_normalization(request)
    quantizer = _declared_quantizer(request)
    load_program(request.program, request.input_shape, len(request.class_names))
    evaluation = None
    if request.eval_folder is not None:
        evaluation = read_folder_eval_set(
            request.eval_folder, request.input_shape, list(request.class_names)
        )
    manifest = Manifest(
        architecture=EXPORTED_ARCHITECTURE,
        dataset=request.dataset,
        input_shape=list(request.input_shape),
        class_names=list(request.class_names),
        quantizer=quantizer,
        training={"imported_from": request.program.name},
        weights_sha256=sha256_file(request.program),
        created_at=created_at,
        name=request.out.name,
        format="exported-program",
        normalization=normalization,
    )
    problem = manifest_problem(asdict(manifest))
    if problem is not None:
        raise CheckpointError(f"the declared model is not valid: {problem}")
    with replacing_folder(request.out) as staging:
        shutil.copyfile(request.program, staging / PROGRAM_FILE)
        (staging / PROGRAM_FILE).chmod(0o644)
        if sha256_file(staging / PROGRAM_FILE) != manifest.weights_sha256:
            raise CheckpointError(f"{request.program} changed while it was being imported")
        if evaluation is not None:
            images, labels, source = evaluation
            source = {"dataset": request.dataset, **source}
            write_eval_set(staging / CHECKPOINT_EVAL_SET, images, labels, source)
        (staging / MANIFEST_FILE).write_text(_manifest_json(manifest))
    return manifest


def _manifest_json(manifest: Manifest) -> str:
    return json.dumps(asdict(manifest), indent=2) + "\n"


def _check_declaration(request: ProgramImport) -> None:
    channels, height, width = request.input_shape
    if channels not in CHANNELS:
        raise CheckpointError(
            f"--input-shape has {channels} channels; a served model takes 1 (grey) or 3 (RGB), "
            "the channel counts the service decodes images to"
        )
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise CheckpointError(
            f"--input-shape sides must lie in 1..{MAX_SIDE}, got {height}x{width}"
        )
    names = request.class_names
    if len(names) < 2 or any(not n for n in names) or len(set(names)) != len(names):
        raise CheckpointError(
            f"--class-names needs at least two distinct non-empty names, got {list(names)}"
        )


def _declared_normalization(request: ProgramImport) -> dict | None:
    if request.mean is None and request.std is None:
        return None
    if request.mean is None or request.std is None:
        raise CheckpointError("--mean and --std go together")
    channels = request.input_shape[0]
    for flag, values in (("--mean", request.mean), ("--std", request.std)):
        if len(values) != channels:
            raise CheckpointError(
                f"{flag} has {len(values)} values for {channels} channels; give one per channel"
            )
    if any(not s > 0 for s in request.std):
        raise CheckpointError(f"--std must be positive, got {list(request.std)}")
    return {"mean": list(request.mean), "std": list(request.std)}


def _declared_quantizer(request: ProgramImport) -> dict:
    """The defence as a manifest spec; a TQ program's thresholds are fixed, as given."""
    if request.defence == "none":
        return {"kind": "none"}
    try:
        quantizer = build_quantizer(
            request.defence,
            request.levels,
            list(request.thresholds) if request.thresholds is not None else None,
        )
    except ValueError as exc:
        raise CheckpointError(f"--defence {request.defence}: {exc}") from None
    return quantizer.spec()
