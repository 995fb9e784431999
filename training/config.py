"""Training configuration, and the pure schedules that depend only on it and the epoch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Defense = Literal["none", "cq", "tq"]


@dataclass(frozen=True)
class TrainConfig:
    dataset: str
    defense: Defense
    out: Path
    data_dir: Path
    levels: int = 2
    epochs: int = 6
    batch_size: int = 128
    lr: float = 1e-3
    schedule: Literal["constant", "cosine"] = "constant"
    weight_decay: float = 0.0
    # TQ's soft staircase is annealed geometrically from steepness_start to steepness_end,
    # so the surrogate the CNN trains on ends close to the hard staircase that is served.
    steepness_start: float = 10.0
    steepness_end: float = 100.0
    augment: bool = False
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    download: bool = False
    progress: bool = True
    limit_train: int | None = None  # use only the first N training images (smoke runs)
    # Start the CNN from this checkpoint's CNN weights (same dataset and architecture); the
    # quantizer starts fresh. Lets defended models be fine-tuned from the undefended one.
    init_from: Path | None = None

    def __post_init__(self) -> None:
        checks = {
            "defense must be none, cq or tq": self.defense in ("none", "cq", "tq"),
            "levels must be >= 2": self.levels >= 2,
            "epochs must be >= 1": self.epochs >= 1,
            "batch_size must be >= 1": self.batch_size >= 1,
            "lr must be positive": self.lr > 0,
            "schedule must be constant or cosine": self.schedule in ("constant", "cosine"),
            "steepness must be positive and not decrease": 0
            < self.steepness_start
            <= self.steepness_end,
            "device must be auto, cpu or cuda": self.device in ("auto", "cpu", "cuda"),
            "limit_train must be positive": self.limit_train is None or self.limit_train > 0,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError("; ".join(failed))

    def to_json(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    # Fields that must agree for an interrupted run to be resumed.
    RESUME_KEYS = (
        "dataset",
        "defense",
        "levels",
        "epochs",
        "batch_size",
        "lr",
        "schedule",
        "weight_decay",
        "steepness_start",
        "steepness_end",
        "augment",
        "seed",
        "limit_train",
        "init_from",
    )


def learning_rate(config: TrainConfig, epoch: int) -> float:
    if config.schedule == "constant":
        return config.lr
    return 0.5 * config.lr * (1 + math.cos(math.pi * epoch / config.epochs))


def steepness(config: TrainConfig, epoch: int) -> float:
    """Geometric annealing: steepness_start at the first epoch, steepness_end at the last."""
    if config.epochs == 1:
        return config.steepness_end
    ratio = config.steepness_end / config.steepness_start
    return config.steepness_start * ratio ** (epoch / (config.epochs - 1))
