"""Write the sample images of samples/ from the official MNIST and CIFAR-10 test sets.

    .venv/bin/python samples/make_samples.py --data-dir ../shared/data

``--data-dir`` holds ``mnist/`` (the official IDX files) and ``cifar10/`` (any form that
``training.datasets`` reads). Each PNG is one official test image, pixel for pixel; the
JPEG is the same CIFAR-10 image re-encoded (lossy), for the README's JPEG example. The
script also writes samples/README.md with each file's provenance and sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.registry import DATASETS
from training.datasets import Dataset, load_dataset

log = logging.getLogger("samples")

HERE = Path(__file__).resolve().parent
JPEG_QUALITY = 95


@dataclass(frozen=True)
class Sample:
    file: str
    dataset: str
    index: int  # position in the official test set, in file order


SAMPLES = (
    Sample("digit.png", "mnist", 0),
    Sample("mnist-test-1.png", "mnist", 1),
    Sample("mnist-test-2.png", "mnist", 2),
    Sample("mnist-test-3.png", "mnist", 3),
    Sample("photo.png", "cifar10", 0),
    Sample("photo.jpg", "cifar10", 0),
    Sample("cifar10-test-1.png", "cifar10", 1),
    Sample("cifar10-test-2.png", "cifar10", 2),
    Sample("cifar10-test-3.png", "cifar10", 3),
)

_HEADER = """\
# Sample images

Real images from the official **test** sets, for the README's `curl`, Python-client and
`tritonclient` examples. Each PNG is the official image pixel for pixel (MNIST 28x28
grayscale, CIFAR-10 32x32 RGB); `photo.jpg` is CIFAR-10 test image 0 re-encoded as JPEG
(quality {quality}, no chroma subsampling), so its pixels differ slightly from the official ones.
`index` is the image's position in the official test set in file order (MNIST
`t10k-images-idx3-ubyte`, CIFAR-10 `test_batch`), counted from 0.

Written by `samples/make_samples.py` (`.venv/bin/python samples/make_samples.py --data-dir
../shared/data`); `tests/test_samples.py` checks them against the official files when those
are present, and the labels below always.

| file | dataset | split | index | label | class | sha256 |
|---|---|---|---|---|---|---|
"""


def as_image(pixels: np.ndarray) -> Image.Image:
    """An official (C, H, W) uint8 image as a Pillow image: L for one channel, RGB for three."""
    if pixels.shape[0] == 1:
        return Image.fromarray(pixels[0], mode="L")
    return Image.fromarray(pixels.transpose(1, 2, 0), mode="RGB")  # CHW -> HWC


def encode(image: Image.Image, suffix: str) -> bytes:
    out = io.BytesIO()
    if suffix == ".jpg":
        image.save(out, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    else:
        image.save(out, format="PNG")
    return out.getvalue()


def write_samples(data_dir: Path, out_dir: Path) -> list[str]:
    """Write every sample and the README; returns the README's table rows."""
    datasets: dict[str, Dataset] = {}
    rows = []
    for sample in SAMPLES:
        if sample.dataset not in datasets:
            datasets[sample.dataset] = load_dataset(sample.dataset, data_dir / sample.dataset)
        test = datasets[sample.dataset].test
        label = int(test.labels[sample.index])
        data = encode(as_image(test.images[sample.index]), Path(sample.file).suffix)
        (out_dir / sample.file).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        rows.append(
            f"| `{sample.file}` | {sample.dataset} | test | {sample.index} | {label} "
            f"| {DATASETS[sample.dataset].class_names[label]} | `{digest}` |"
        )
        log.info(
            "wrote %s: %s test image %d, label %d", sample.file, sample.dataset, sample.index, label
        )
    readme = _HEADER.format(quality=JPEG_QUALITY) + "\n".join(rows) + "\n"
    (out_dir / "README.md").write_text(readme)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=HERE.parent.parent / "shared" / "data",
        help="folder holding mnist/ and cifar10/ with the official files",
    )
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write the samples to")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_samples(args.data_dir, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
