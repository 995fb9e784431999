"""The shipped TQ checkpoint served end to end: PNG digits in, the right labels out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.evalset import eval_set_path, load_eval_set
from tests.service.helpers.images import encode

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "checkpoints" / "mnist-tq2"
EVAL_SET = eval_set_path("mnist")


@pytest.mark.skipif(
    not (SHIPPED / "manifest.json").is_file() or not EVAL_SET.is_file(),
    reason="shipped checkpoint checkpoints/mnist-tq2 or data/eval subset not present",
)
def test_shipped_tq_model_classifies_test_digits_through_the_whole_path(serve) -> None:
    client = serve(checkpoints=[SHIPPED])
    digits = load_eval_set(EVAL_SET)
    images = (digits.images[:200, 0].numpy() * 255).round().astype(np.uint8)
    labels = digits.labels[:200].tolist()
    answers = [client.post("/classify", content=encode(Image.fromarray(a), "PNG")) for a in images]
    assert all(a.status_code == 200 for a in answers)
    accuracy = np.mean([a.json()["label"] == y for a, y in zip(answers, labels, strict=True)])
    assert accuracy >= 0.97, accuracy
    assert answers[0].json()["defence"]["kind"] == "tq"
