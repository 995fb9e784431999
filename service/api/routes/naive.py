"""A deliberately naive classify endpoint: the benchmark's baseline, never production.

One forward per request, no batching, no bounds on the body, no format
allow-list: what a first version of this service would look like. It is
mounted only when ``QUSEC_ENABLE_NAIVE_ENDPOINT=1``. It uses the same loaded
model (quantizer included) as ``/classify``, so the benchmark compares serving
strategies, not models.
"""

from __future__ import annotations

import io
from typing import Annotated

import numpy as np
import torch
from fastapi import APIRouter, File, UploadFile
from PIL import Image

from service.api.deps import Pool

router = APIRouter(prefix="/naive", tags=["benchmark baseline"], include_in_schema=False)


@router.post("/classify")
def classify_naive(
    pool: Pool, file: Annotated[UploadFile, File()], model: str | None = None
) -> dict:
    classifier = pool.get(model)
    channels, height, width = classifier.input_shape
    image = Image.open(io.BytesIO(file.file.read()))
    image = image.convert("L" if channels == 1 else "RGB").resize((width, height))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    rows = torch.from_numpy(pixels.reshape(1, height, width, channels)).permute(0, 3, 1, 2)
    with torch.inference_mode():
        probabilities = torch.softmax(classifier.model(rows.to(classifier.device)), dim=1)[0]
    label = int(torch.argmax(probabilities))
    return {
        "label": label,
        "class_name": classifier.class_names[label],
        "probabilities": dict(zip(classifier.class_names, probabilities.tolist(), strict=True)),
        "model": classifier.describe_briefly(),
    }
