"""Training state saved after every epoch, so an interrupted run continues where it stopped.

The state lives beside the output folder (``.NAME.train-state/``) in safetensors
plus JSON, never pickle, and is replaced atomically after each epoch. It is removed once the final
checkpoint is written. Sample order is a pure function of (seed, epoch), so no
random-number-generator state needs saving.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from models.checkpoint import replacing_folder
from training.config import TrainConfig

log = logging.getLogger(__name__)


class ResumeError(Exception):
    """Saved training state exists but cannot be used for this run."""


def state_dir(config: TrainConfig) -> Path:
    return config.out.with_name(f".{config.out.name}.train-state")


def save(
    config: TrainConfig, model, optimizer, epochs_done: int, history: list, average=None
) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if average is not None:
        for key, value in average.state_dict().items():
            tensors[f"average.{key}"] = value.detach().cpu().contiguous()
    optim_state = optimizer.state_dict()
    for index, values in optim_state["state"].items():
        for key, value in values.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    meta = {
        "epochs_done": epochs_done,
        "history": history,
        "config": {k: config.to_json()[k] for k in TrainConfig.RESUME_KEYS},
        "param_groups": optim_state["param_groups"],
        "average_updates": None if average is None else average.updates,
    }
    with replacing_folder(state_dir(config)) as staging:
        save_file(tensors, str(staging / "state.safetensors"))
        (staging / "state.json").write_text(json.dumps(meta, indent=2))


def restore(config: TrainConfig, model, optimizer, average=None) -> tuple[int, list]:
    """Load saved state if there is some; returns (first epoch to run, history so far)."""
    folder = state_dir(config)
    if not (folder / "state.json").is_file():
        return 0, []
    meta = json.loads((folder / "state.json").read_text())
    wanted = {k: config.to_json()[k] for k in TrainConfig.RESUME_KEYS}
    # A state saved before a key existed ran with that key's default.
    saved = {k: meta["config"].get(k, _default(k)) for k in wanted}
    differing = sorted(k for k in wanted if saved[k] != wanted[k])
    if differing:
        raise ResumeError(
            f"{folder} holds an interrupted run with different settings ({', '.join(differing)}); "
            "rerun with the same settings or delete that folder to start over"
        )
    tensors = load_file(str(folder / "state.safetensors"))
    model.load_state_dict(
        {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")},
        strict=True,
    )
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if average is not None:
        prefix = "average."
        average.load_state_dict(
            {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)},
            meta["average_updates"],
        )
    log.info("resuming %s after epoch %d", config.out, meta["epochs_done"])
    return meta["epochs_done"], meta["history"]


def _default(key: str) -> object:
    spec = TrainConfig.__dataclass_fields__[key]
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return None if spec.default is dataclasses.MISSING else spec.default


def clear(config: TrainConfig) -> None:
    shutil.rmtree(state_dir(config), ignore_errors=True)
