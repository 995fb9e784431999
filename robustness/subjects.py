"""The models an attack suite runs on, read from checkpoint folders.

Beside the runner, so that a job runner (the service's) finds subjects and their transfer
surrogate the same way the command line does, without importing the command line.
"""

from __future__ import annotations

from pathlib import Path

from models.checkpoint import load_checkpoint
from robustness.plan import Subject


def load_subject(path: Path) -> Subject:
    return Subject.from_checkpoint(load_checkpoint(path))


def default_surrogate(checkpoint: Path, dataset: str) -> Path | None:
    candidate = checkpoint.parent / f"{dataset}-undefended"
    return candidate if (candidate / "manifest.json").is_file() else None
