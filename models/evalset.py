"""Fixed evaluation subsets: shipped with the repository, or kept in a checkpoint folder.

Each subset is an ``.npz`` file with ``images`` (N, C, H, W) uint8 and
``labels`` (N,) int64, next to a JSON sidecar naming its source and sha256.
The official datasets' subsets live in ``data/eval`` (``<dataset>-test-first1000.npz``).
A model of any other data brings its own in its checkpoint folder (``eval-set.npz``):
training on an image folder writes the first 1,000 images of its test split there, and
``python -m models import --eval-folder`` a labelled folder's images. A model's default
set (``default_eval_set``) is its folder's own, else its dataset's shipped one. The
service's default robustness check, the command line and the checkpoint tests read them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import sha256_file

EVAL_DIR = Path(__file__).resolve().parent.parent / "data" / "eval"
# A checkpoint folder's own evaluation set (with its eval-set.json sidecar).
CHECKPOINT_EVAL_SET = "eval-set.npz"


class EvalSetError(Exception):
    """An evaluation subset is missing, altered or malformed."""


@dataclass(frozen=True)
class EvalSet:
    name: str
    images: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64
    sha256: str


def eval_set_path(dataset: str, eval_dir: Path = EVAL_DIR) -> Path:
    return eval_dir / f"{dataset}-test-first1000.npz"


def default_eval_set(checkpoint: Path | str, dataset: str, eval_dir: Path = EVAL_DIR) -> Path:
    """The checkpoint folder's own set when it has one, else its dataset's shipped one."""
    own = Path(checkpoint) / CHECKPOINT_EVAL_SET
    return own if own.is_file() else eval_set_path(dataset, eval_dir)


def write_eval_set(path: Path, images: np.ndarray, labels: np.ndarray, source: dict) -> str:
    """Write the subset and its sidecar; returns the file's sha256."""
    if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != (len(images),):
        raise ValueError("images must be uint8 (N, C, H, W) and labels (N,)")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=images, labels=labels.astype(np.int64))
    digest = sha256_file(path)
    sidecar = {"file": path.name, "sha256": digest, "count": len(labels), **source}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return digest


def read_folder_eval_set(
    folder: Path | str, input_shape: tuple[int, int, int], class_names: list[str]
) -> tuple[np.ndarray, np.ndarray, dict]:
    """A labelled folder (one sub-folder per class, named as the model's classes) as
    (uint8 images, labels, sidecar source), fitted to ``input_shape`` by the service's
    policy; ``ImageFolderError`` names what is wrong with it."""
    from models.imagefolder import read_labelled_folder  # Pillow only when a folder is read

    found = read_labelled_folder(folder, input_shape, class_names)
    source = {
        "source": f"the labelled image folder {Path(folder).name}, in file order",
        "source_files_sha256": {"files": found.sha256},
    }
    return found.images, found.labels, source


def folder_as_eval_set(
    folder: Path | str, input_shape: tuple[int, int, int], class_names: list[str]
) -> EvalSet:
    """A labelled folder read straight into an evaluation set (nothing is written)."""
    images, labels, source = read_folder_eval_set(folder, input_shape, class_names)
    return EvalSet(
        name=Path(folder).name,
        images=torch.from_numpy(images).float() / 255.0,
        labels=torch.from_numpy(labels),
        sha256=source["source_files_sha256"]["files"],
    )


def load_eval_set(path: Path | str) -> EvalSet:
    """Read a subset, refusing it unless its sha256 matches the sidecar."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if not path.is_file() or not sidecar.is_file():
        raise EvalSetError(f"{path}: evaluation subset or its sidecar {sidecar.name} not found")
    expected = json.loads(sidecar.read_text()).get("sha256")
    actual = sha256_file(path)
    if actual != expected:
        raise EvalSetError(f"{path}: sha256 {actual} does not match the sidecar's {expected}")
    with np.load(path, allow_pickle=False) as data:
        images, labels = data["images"], data["labels"]
    if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != (len(images),):
        raise EvalSetError(f"{path}: expected uint8 images (N, C, H, W) and labels (N,)")
    return EvalSet(
        name=path.stem,
        images=torch.from_numpy(images).float() / 255.0,
        labels=torch.from_numpy(labels.astype(np.int64)),
        sha256=actual,
    )
