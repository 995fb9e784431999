"""Tiny random-weight checkpoints, and waiting for an in-process app to be ready."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from fastapi.testclient import TestClient

from models.checkpoint import Manifest, save_checkpoint
from models.registry import build_model

MNIST_CLASSES = [str(d) for d in range(10)]


def write_checkpoint(
    folder: Path,
    quantizer: dict,
    input_shape: tuple[int, int, int] = (1, 28, 28),
    dataset: str = "mnist",
    seed: int = 0,
) -> Path:
    torch.manual_seed(seed)
    model = build_model("cleverhans-basic-cnn", input_shape, 10, quantizer)
    manifest = Manifest(
        architecture="cleverhans-basic-cnn",
        dataset=dataset,
        input_shape=list(input_shape),
        class_names=MNIST_CLASSES,
        quantizer={},
    )
    save_checkpoint(folder, model, manifest)
    return folder


def wait_ready(client: TestClient, timeout_seconds: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while client.get("/readyz").status_code != 200:
        if time.monotonic() > deadline:
            raise AssertionError("service did not become ready")
        time.sleep(0.01)
