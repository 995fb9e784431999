"""Checkpoint folders: ``model.safetensors`` or an exported ``program.pt2``, and ``manifest.json``.

The manifest says what the weights are (architecture, dataset, input shape,
classes, quantizer and its learned thresholds), how they were made (training
config, seed, data checksums, git revision, time) and how good they are (clean
accuracy on the full official test set). Loading refuses anything that does
not match: a wrong weights sha256, a missing or unexpected tensor, a shape
that disagrees with the manifest, an unknown schema version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.cnn import QuantizedClassifier
from models.manifest_schema import SCHEMA_VERSION, manifest_problem
from models.registry import assemble, build_model

WEIGHTS_FILE = "model.safetensors"
PROGRAM_FILE = "program.pt2"
MANIFEST_FILE = "manifest.json"


class CheckpointError(Exception):
    """A checkpoint folder is missing, malformed, tampered with or inconsistent."""


@dataclass
class Manifest:
    architecture: str
    dataset: str
    input_shape: list[int]
    class_names: list[str]
    quantizer: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)
    data_sha256: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str = ""
    git_revision: str = "unknown"
    created_at: str = ""
    name: str = ""
    schema_version: int = SCHEMA_VERSION
    # Added within schema version 1; absent in older manifests, where they mean these defaults.
    format: str = "safetensors"  # or "exported-program": weights_sha256 is program.pt2's
    architecture_args: dict[str, Any] = field(default_factory=dict)
    normalization: dict[str, list[float]] | None = None  # {"mean": [...], "std": [...]}

    @property
    def weights_file(self) -> str:
        return PROGRAM_FILE if self.format == "exported-program" else WEIGHTS_FILE

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Manifest:
        version = raw.get("schema_version")
        if version != SCHEMA_VERSION:
            raise CheckpointError(
                f"manifest schema_version {version!r} is not supported (expected {SCHEMA_VERSION})"
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise CheckpointError(f"manifest has unknown fields: {', '.join(unknown)}")
        missing = sorted(
            f
            for f in ("architecture", "dataset", "input_shape", "class_names", "quantizer")
            if f not in raw
        )
        if missing:
            raise CheckpointError(f"manifest lacks required fields: {', '.join(missing)}")
        manifest = cls(**raw)
        if len(manifest.input_shape) != 3 or not all(
            isinstance(d, int) and d > 0 for d in manifest.input_shape
        ):
            raise CheckpointError(
                f"manifest input_shape must be [C, H, W], got {manifest.input_shape}"
            )
        return manifest


@dataclass
class LoadedCheckpoint:
    path: Path
    model: QuantizedClassifier
    manifest: Manifest


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def replacing_folder(folder: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``folder``; when the block succeeds, the
    staging folder takes ``folder``'s place, so a half-written folder never appears and
    the old one is kept until the new one is complete. On failure the staging goes."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it owner-only; containers read it as another user
        yield staging
        if folder.exists():
            backup = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(folder, backup)
            os.replace(staging, folder)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def save_checkpoint(
    folder: Path | str,
    model: QuantizedClassifier,
    manifest: Manifest,
    extra: Callable[[Path], object] | None = None,
) -> Manifest:
    """Write weights and manifest atomically (see ``replacing_folder``); ``extra`` writes
    more files (an evaluation set) into the staging folder, so they appear together.

    The quantizer spec and the normalization in the manifest are taken from the model, so
    the recorded thresholds are always the ones in the weights.
    """
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with replacing_folder(folder) as staging:
        save_file(state, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        (staging / WEIGHTS_FILE).chmod(0o644)
        manifest.quantizer = (
            model.quantizer.spec() if model.quantizer is not None else {"kind": "none"}
        )
        manifest.normalization = (
            model.normalization.spec() if model.normalization is not None else None
        )
        manifest.weights_sha256 = sha256_file(staging / WEIGHTS_FILE)
        manifest.name = manifest.name or folder.name
        if extra is not None:
            extra(staging)
        (staging / MANIFEST_FILE).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest


def read_manifest(folder: Path | str) -> Manifest:
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: manifest not found")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: manifest is not valid JSON ({exc})") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: manifest is unreadable ({exc.strerror})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: manifest must be a JSON object")
    if raw.get("schema_version") == SCHEMA_VERSION:
        problem = manifest_problem(raw)
        if problem is not None:
            raise CheckpointError(f"{path}: {problem}")
    try:
        return Manifest.from_dict(raw)
    except TypeError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def load_checkpoint(folder: Path | str, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Load and verify a checkpoint; the model comes back in eval mode.

    Either kind of folder gives the same kind of model: quantizer, normalization, network.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    weights = folder / manifest.weights_file
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file not found")
    actual = sha256_file(weights)
    if actual != manifest.weights_sha256:
        raise CheckpointError(
            f"{weights}: sha256 {actual} does not match the manifest's {manifest.weights_sha256}; "
            "the weights were modified, truncated or belong to another checkpoint"
        )
    if manifest.format == "exported-program":
        model = _load_exported(weights, manifest, folder)
    else:
        model = _load_registered(weights, manifest, folder)
    model.to(device).eval()
    return LoadedCheckpoint(folder, model, manifest)


def _load_registered(weights: Path, manifest: Manifest, folder: Path) -> QuantizedClassifier:
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({exc})") from None
    try:
        model = build_model(
            manifest.architecture,
            tuple(manifest.input_shape),
            len(manifest.class_names),
            manifest.quantizer,
            manifest.architecture_args,
            manifest.normalization,
        )
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{folder}: manifest describes no buildable model ({exc})") from None
    _load_strict(model, state, folder)
    _check_thresholds_match(model, manifest, folder)
    return model


def _load_exported(program: Path, manifest: Manifest, folder: Path) -> QuantizedClassifier:
    from models.exported import ProgramError, load_program  # torch.export loads slowly

    try:
        network = load_program(program, tuple(manifest.input_shape), len(manifest.class_names))
        return assemble(network, manifest.quantizer, manifest.normalization)
    except (ProgramError, ValueError) as exc:
        raise CheckpointError(f"{folder}: {exc}") from None


def _load_strict(model: QuantizedClassifier, state: dict[str, torch.Tensor], folder: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{folder}: weights do not match the manifest's model; "
            f"missing keys: {missing or 'none'}; unexpected keys: {unexpected or 'none'}"
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise CheckpointError(f"{folder}: tensor shapes disagree: {'; '.join(wrong)}")
    model.load_state_dict(state, strict=True)


def _check_thresholds_match(model: QuantizedClassifier, manifest: Manifest, folder: Path) -> None:
    if model.quantizer is None:
        return
    recorded = torch.tensor(manifest.quantizer.get("thresholds", []), dtype=torch.float32)
    actual = model.quantizer.thresholds.detach()
    if recorded.shape != actual.shape or not torch.allclose(recorded, actual, atol=1e-6):
        raise CheckpointError(
            f"{folder}: manifest thresholds {recorded.tolist()} disagree with the weights' "
            f"{actual.tolist()}"
        )
