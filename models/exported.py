"""A ``torch.export`` program as the network behind the quantizer: no Python code of the user's.

``torch.export.save`` writes a ``.pt2`` archive: the traced graph as JSON and the weights as
raw tensors. ``ExportedProgram.module()`` turns it back into a module whose forward and
input gradient work, so it can be served and attacked like any other network. What it cannot
do (docs/models.md): be trained (TQ needs the network in Python), switch between train and
eval behaviour (batch norm and dropout run as they were traced, so export after
``model.eval()``), or take a batch size its graph does not allow (``ProgramNetwork`` fits
the batch to what the program accepts).

A ``.pt2`` archive may also hold pickled payloads, which ``torch.export.load`` would
unpickle, running whatever code they name; such archives are refused before loading.
"""

from __future__ import annotations

import json
import logging
import math
import zipfile
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

# torch.export.save's archive names the payloads in these JSON files; an entry that is not
# a plain tensor (use_pickle, custom or opaque objects) is unpickled by torch.export.load.
_PAYLOAD_CONFIGS = ("/data/weights/", "/data/constants/")
_PLAIN_PAYLOAD_PREFIXES = ("weight_", "tensor_")
MAX_CONFIG_BYTES = 64 << 20


class ProgramError(ValueError):
    """A file is not a usable exported program, or disagrees with what it was declared as."""


class ProgramNetwork(nn.Module):
    """An exported program's module, fitted to any batch size.

    ``min_batch``/``max_batch`` are the batch sizes the program's graph accepts (both the
    traced size when it was exported with a static batch). Smaller batches are padded by
    repeating their last row, larger ones run in chunks; the extra rows' logits are dropped,
    so values and input gradients are those of the rows asked for.
    """

    def __init__(self, program: nn.Module, min_batch: int = 1, max_batch: int | None = None):
        super().__init__()
        self.program = program
        self.min_batch = min_batch
        self.max_batch = max_batch

    def train(self, mode: bool = True) -> ProgramNetwork:
        # An exported module refuses train()/eval(): its behaviour was fixed when it was traced.
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.min_batch <= n and (self.max_batch is None or n <= self.max_batch):
            return self.program(x)
        chunk = self.max_batch or n
        outputs = []
        for start in range(0, n, chunk):
            part = x[start : start + chunk]
            short = self.min_batch - part.shape[0]
            if short > 0:  # (k, C, H, W) -> (min_batch, C, H, W)
                part = torch.cat([part, part[-1:].expand(short, *part.shape[1:])])
            outputs.append(self.program(part)[: min(chunk, n - start)])
        return torch.cat(outputs)

    def extra_repr(self) -> str:
        return f"min_batch={self.min_batch}, max_batch={self.max_batch}"


def check_archive(path: Path) -> None:
    """Refuse a file that is not a ``torch.export`` archive or that holds pickled payloads."""
    if not path.is_file():
        raise ProgramError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any(name.endswith("/archive_format") for name in names):
                raise ProgramError(
                    f"{path}: not an exported program (no archive_format entry; write it with "
                    "torch.export.save)"
                )
            for name in names:
                if name.endswith(".json") and any(d in name for d in _PAYLOAD_CONFIGS):
                    _check_payload_config(archive, name, path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ProgramError(
            f"{path}: not an exported program (not a .pt2 zip archive: {exc}); "
            "write it with torch.export.save"
        ) from None


def _check_payload_config(archive: zipfile.ZipFile, name: str, path: Path) -> None:
    if archive.getinfo(name).file_size > MAX_CONFIG_BYTES:
        raise ProgramError(f"{path}: {name} is implausibly large")
    try:
        config = json.loads(archive.read(name)).get("config", {})
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise ProgramError(f"{path}: {name} is not the JSON torch.export.save writes") from None
    for fqn, payload in config.items():
        if payload.get("use_pickle") or not str(payload.get("path_name", "")).startswith(
            _PLAIN_PAYLOAD_PREFIXES
        ):
            raise ProgramError(
                f"{path}: {fqn!r} is stored as a pickled object, which loading would "
                "unpickle (and so run code from the file); export plain tensors only"
            )


def load_program(
    path: Path | str, input_shape: tuple[int, int, int], num_classes: int
) -> ProgramNetwork:
    """Load an exported program and check it maps (N, C, H, W) to (N, num_classes)."""
    path = Path(path)
    check_archive(path)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad archive
        raise ProgramError(
            f"{path}: torch.export.load failed ({type(exc).__name__}: {exc})"
        ) from None
    min_batch, max_batch = _batch_range(program, path)
    network = ProgramNetwork(program.module(), min_batch, max_batch)
    network.requires_grad_(False)  # never trained here; attacks need only the input gradient
    _check_outputs(network, path, input_shape, num_classes)
    return network


def _batch_range(program: torch.export.ExportedProgram, path: Path) -> tuple[int, int | None]:
    """The batch sizes the program's only tensor input accepts, from its traced shape."""
    inputs = [
        node
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs
    ]
    if len(inputs) != 1:
        raise ProgramError(
            f"{path}: the program takes {len(inputs)} inputs; it must take one image batch"
        )
    value = inputs[0].meta.get("val")
    if not isinstance(value, torch.Tensor) or value.dim() != 4:
        raise ProgramError(f"{path}: the program's input must be one (N, C, H, W) tensor")
    batch = value.shape[0]
    if isinstance(batch, int):
        log.info("%s was exported with a static batch of %d; batches are fitted to it", path, batch)
        return batch, batch
    ranges = program.range_constraints.get(batch.node.expr)
    if ranges is None:
        return 1, None
    lower = max(1, int(ranges.lower))
    upper = None if not math.isfinite(float(ranges.upper)) else int(ranges.upper)
    return lower, upper


def _check_outputs(
    network: ProgramNetwork, path: Path, input_shape: tuple[int, int, int], num_classes: int
) -> None:
    for n in (1, 2):
        try:
            with torch.no_grad():
                out = network(torch.zeros(n, *input_shape))
        except Exception as exc:  # noqa: BLE001 - a guard or a kernel may fail; both mean no
            raise ProgramError(
                f"{path}: the program fails on a zero batch of shape {[n, *input_shape]} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "is --input-shape the shape it was exported with?"
            ) from None
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (n, num_classes):
            shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ProgramError(
                f"{path}: the program maps a batch of {n} to {shape}, not [{n}, {num_classes}] "
                f"logits for the {num_classes} declared classes"
            )
