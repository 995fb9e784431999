"""The sample images in samples/ are what samples/README.md says: official test images with
the labels it lists, and the bytes its sha256 names."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.checkpoint import load_checkpoint
from models.registry import DATASETS
from training.datasets import load_dataset

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
BUNDLED = {
    "mnist": ROOT / "checkpoints" / "mnist-tq2",
    "cifar10": ROOT / "checkpoints" / "cifar10-tq4",
}
ROW = re.compile(
    r"^\| `(?P<file>[^`]+)` \| (?P<dataset>\w+) \| test \| (?P<index>\d+) \| (?P<label>\d+) "
    r"\| (?P<class_name>\w+) \| `(?P<sha256>[0-9a-f]{64})` \|$"
)


@dataclass(frozen=True)
class Listed:
    file: str
    dataset: str
    index: int
    label: int
    class_name: str
    sha256: str


def listed() -> list[Listed]:
    rows = []
    for line in (SAMPLES / "README.md").read_text().splitlines():
        found = ROW.match(line)
        if found:
            values = found.groupdict()
            rows.append(
                Listed(
                    values["file"],
                    values["dataset"],
                    int(values["index"]),
                    int(values["label"]),
                    values["class_name"],
                    values["sha256"],
                )
            )
    return rows


def pixels(path: Path) -> np.ndarray:
    """A sample as the official arrays hold it: (C, H, W) uint8."""
    with Image.open(path) as image:
        array = np.asarray(image)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def test_the_readme_lists_every_sample_with_its_bytes_and_class_name() -> None:
    rows = listed()
    images = sorted(p.name for p in SAMPLES.iterdir() if p.suffix in (".png", ".jpg"))
    assert sorted(row.file for row in rows) == images
    assert {"digit.png", "photo.jpg", "photo.png"} <= set(images)  # the README's curl lines
    for row in rows:
        assert hashlib.sha256((SAMPLES / row.file).read_bytes()).hexdigest() == row.sha256
        assert DATASETS[row.dataset].class_names[row.label] == row.class_name
        assert pixels(SAMPLES / row.file).shape == DATASETS[row.dataset].input_shape


def test_the_bundled_models_agree_with_the_listed_labels() -> None:
    for dataset, folder in BUNDLED.items():
        rows = [row for row in listed() if row.dataset == dataset]
        batch = np.stack([pixels(SAMPLES / row.file) for row in rows])
        model = load_checkpoint(folder).model.eval()
        with torch.inference_mode():
            predicted = model(torch.from_numpy(batch).float() / 255).argmax(dim=1)
        assert predicted.tolist() == [row.label for row in rows], dataset


@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_each_sample_is_the_official_test_image_it_names(dataset: str, official_data) -> None:
    test = load_dataset(dataset, official_data(dataset)).test
    for row in (row for row in listed() if row.dataset == dataset):
        assert row.label == test.labels[row.index], row.file
        official = test.images[row.index]
        if row.file.endswith(".png"):
            np.testing.assert_array_equal(pixels(SAMPLES / row.file), official, err_msg=row.file)
        else:  # re-encoded JPEG: close to the official pixels, not equal
            difference = np.abs(pixels(SAMPLES / row.file).astype(int) - official.astype(int))
            assert difference.mean() < 4.0, row.file  # another image differs by tens
