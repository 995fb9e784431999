"""Training configuration, and the pure schedules that depend only on it and the epoch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Defense = Literal["none", "cq", "tq"]
Adversarial = Literal["none", "pgd", "trades", "fgsm-rs", "rslad"]
# The adversarial training methods (training/adversarial.py), "none" first: the one list the
# config's check, the CLI's choices and the training step read.
ADVERSARIAL_METHODS: tuple[str, ...] = ("none", "pgd", "trades", "fgsm-rs", "rslad")


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
    architecture: str = "cleverhans-basic-cnn"
    # Keyword arguments of the architecture's factory; recorded in the manifest.
    architecture_args: dict[str, Any] = field(default_factory=dict)
    # An image folder (dataset "imagefolder", training/imagefolder.py): the input (H, W) and
    # channels (None: inferred from the images), and the fraction of each class held out
    # for testing when the folder has no train/ and test/.
    input_size: tuple[int, int] | None = None
    channels: int | None = None
    split: float | None = None
    # Per-channel mean and std applied after the quantizer (None: the network sees [0, 1]).
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = 0.9  # SGD only (Nesterov)
    # Adversarial training (training/adversarial.py): the method, its L-inf radius in [0, 1]
    # pixel units, the inner attack's steps and step size (None: 2.5 eps / steps for PGD and
    # TRADES, Madry et al.'s ratio; 1.25 eps for FGSM-RS, Wong et al.'s), TRADES' beta, and
    # how many epochs the radius ramps up linearly from 0 over (0: full radius from the start).
    adversarial: Adversarial = "none"
    adv_epsilon: float = 0.0
    adv_steps: int = 10
    adv_step_size: float | None = None
    trades_beta: float = 6.0
    # RSLAD (robust soft-label distillation): the checkpoint whose clean-input probabilities
    # are the targets, and the weight of the adversarial term (the clean term gets the rest).
    teacher: Path | None = None
    rslad_alpha: float = 5 / 6
    adv_ramp_epochs: int = 0
    # Held-out images attacked with PGD after every epoch to catch catastrophic overfitting.
    adv_check_samples: int = 512
    # Keep an exponential moving average of the weights with this decay per optimizer step,
    # and ship it instead of the last weights (training/ema.py); None: no average.
    ema_decay: float | None = None

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
            "optimizer must be adam or sgd": self.optimizer in ("adam", "sgd"),
            "momentum must be in [0, 1)": 0 <= self.momentum < 1,
            "channels must be 1 or 3": self.channels in (None, 1, 3),
            "mean and std go together, one value each per channel, std positive": (
                self.mean is None and self.std is None
            )
            or (
                self.mean is not None
                and self.std is not None
                and len(self.mean) == len(self.std) > 0
                and min(self.std) > 0
            ),
            "split must lie strictly between 0 and 1": self.split is None or 0 < self.split < 1,
            "input_size must be two sides >= 1": self.input_size is None
            or (len(self.input_size) == 2 and min(self.input_size) >= 1),
            "input_size, channels and split are for --dataset imagefolder": self.dataset
            == "imagefolder"
            or (self.input_size, self.channels, self.split) == (None, None, None),
            "adversarial must be "
            + ", ".join(ADVERSARIAL_METHODS[:-1])
            + f" or {ADVERSARIAL_METHODS[-1]}": self.adversarial in ADVERSARIAL_METHODS,
            "rslad needs a teacher, and a teacher is for rslad only": (self.adversarial == "rslad")
            == (self.teacher is not None),
            "rslad_alpha must lie in [0, 1]": 0 <= self.rslad_alpha <= 1,
            "adversarial training needs 0 < adv_epsilon <= 1": self.adversarial == "none"
            or 0 < self.adv_epsilon <= 1,
            "adv_steps must be >= 1": self.adv_steps >= 1,
            "adv_step_size must be positive": self.adv_step_size is None or self.adv_step_size > 0,
            "trades_beta must be positive": self.trades_beta > 0,
            "adv_ramp_epochs must be >= 0 and below epochs": 0
            <= self.adv_ramp_epochs
            < self.epochs,
            "adv_check_samples must be >= 0": self.adv_check_samples >= 0,
            "ema_decay must lie strictly between 0 and 1": self.ema_decay is None
            or 0 < self.ema_decay < 1,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError("; ".join(failed))

    def to_json(self) -> dict:
        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            return list(value) if isinstance(value, tuple) else value

        return {k: plain(v) for k, v in asdict(self).items()}

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
        "architecture",
        "architecture_args",
        "input_size",
        "channels",
        "split",
        "mean",
        "std",
        "optimizer",
        "momentum",
        "adversarial",
        "adv_epsilon",
        "adv_steps",
        "adv_step_size",
        "trades_beta",
        "adv_ramp_epochs",
        "teacher",
        "rslad_alpha",
        "ema_decay",
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


def adversarial_epsilon(config: TrainConfig, epoch: int) -> float:
    """The training radius at an epoch: ramped linearly over adv_ramp_epochs, then constant."""
    if config.adv_ramp_epochs == 0:
        return config.adv_epsilon
    return config.adv_epsilon * min(1.0, (epoch + 1) / (config.adv_ramp_epochs + 1))


def adversarial_step_size(config: TrainConfig, epsilon: float) -> float:
    """The inner attack's step: as given, or the method's published ratio to the radius."""
    if config.adv_step_size is not None:
        return config.adv_step_size
    if config.adversarial == "fgsm-rs":
        return 1.25 * epsilon
    return 2.5 * epsilon / config.adv_steps
