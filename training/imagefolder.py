"""Your own images as a dataset: a folder with one sub-folder per class, as torchvision's
``ImageFolder``.

Layouts (class names are the sub-folder names, sorted; labels are their indices):

* ``ROOT/train/CLASS/*`` and ``ROOT/test/CLASS/*``: the split is yours; both sides must
  name the same classes.
* ``ROOT/CLASS/*`` with ``--split F``: a fraction F of each class is held out for testing,
  chosen by the seed, so the same seed and files give the same split.

Reading, checking and decoding the files (and their policy: what is skipped, what is an
error, how an image is fitted to the input) is ``models/imagefolder.py``'s, shared with
evaluation sets, and the fitting is the service's own (``models/imaging.py``). Here:

* A class with no images, fewer than two classes, or a class present in only one of
  ``train/`` and ``test/`` is an error.
* Without ``--input-size`` the size is the most common one among the training images;
  without ``--channels`` it is 1 if every image is grey, else 3.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.imagefolder import (
    ImageFile,
    ImageFolderError,
    class_folders,
    decode_files,
    folder_digest,
    image_files,
    read_headers,
)
from models.registry import DATASETS
from training.datasets import Dataset, DatasetError, Split

log = logging.getLogger(__name__)

MAX_SIDE = 1024  # as the manifest schema's cap on a model's input side


@dataclass(frozen=True)
class FolderOptions:
    input_size: tuple[int, int] | None = None  # (H, W); None: the most common size
    channels: int | None = None  # 1 or 3; None: 1 if every image is grey
    split: float | None = None  # held-out fraction when there is no train/ and test/
    seed: int = 0


def dataset_name(root: Path) -> str:
    """The folder's name as a manifest dataset name (lower case, [a-z0-9_-], 64 at most)."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", root.resolve().name.lower()).strip("-_")[:64]
    return slug or "imagefolder"


def load_image_folder(root: Path | str, options: FolderOptions) -> Dataset:
    try:
        return _load(Path(root), options)
    except ImageFolderError as exc:
        raise DatasetError(str(exc)) from None


def _load(root: Path, options: FolderOptions) -> Dataset:
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    name = dataset_name(root)
    if name in DATASETS:
        raise DatasetError(
            f"{root}: an image folder named {name!r} would pass for the official dataset; "
            "rename the folder (or use --dataset " + name + " for the official files)"
        )
    train_files, test_files, classes = _layout(root, options)
    train = read_headers(train_files, root)
    test = read_headers(test_files, root)
    channels = options.channels or (1 if all(i.grey for i in train + test) else 3)
    height, width = options.input_size or _common_size(train)
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise DatasetError(f"input size {height}x{width} is outside 1..{MAX_SIDE}")
    shape = (channels, height, width)
    digest = folder_digest(train + test, root)
    resized = sum(i.size != (width, height) for i in train + test)
    if resized:
        log.info("%d of %d images letterboxed to %dx%d", resized, len(train + test), width, height)
    dataset = Dataset(
        name, Split(*decode_files(train, shape, root)), Split(*decode_files(test, shape, root))
    )
    dataset.files_sha256 = {f"{name}/files": digest}
    dataset.class_names = classes
    dataset.input_shape = shape
    log.info(
        "image folder %s: %d classes, %d train and %d test images, input %s",
        root,
        len(classes),
        len(train),
        len(test),
        list(shape),
    )
    return dataset


def _layout(root: Path, options: FolderOptions) -> tuple[list, list, tuple[str, ...]]:
    """(train files, test files, class names): each file as (path, label)."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        train_classes = class_folders(root / "train")
        test_classes = class_folders(root / "test")
        if [c.name for c in train_classes] != [c.name for c in test_classes]:
            only = sorted({c.name for c in train_classes} ^ {c.name for c in test_classes})
            raise DatasetError(
                f"{root}: train/ and test/ must name the same classes; only in one: "
                f"{', '.join(only)}"
            )
        names = tuple(c.name for c in train_classes)
        return image_files(train_classes), image_files(test_classes), names
    if options.split is None:
        raise DatasetError(
            f"{root}: no train/ and test/ sub-folders; pass --split 0.2 (say) to hold out "
            "that fraction of each class for testing"
        )
    if not 0 < options.split < 1:
        raise DatasetError(f"--split must lie strictly between 0 and 1, got {options.split}")
    classes = class_folders(root)
    train, test = [], []
    rng = np.random.default_rng(options.seed)
    for label, folder in enumerate(classes):
        files = image_files([folder], [label])
        if len(files) < 2:
            raise DatasetError(f"{folder}: one image; a split needs at least two per class")
        order = rng.permutation(len(files))
        held = min(len(files) - 1, max(1, round(options.split * len(files))))
        test += [files[i] for i in sorted(order[:held])]
        train += [files[i] for i in sorted(order[held:])]
    return train, test, tuple(c.name for c in classes)


def _common_size(images: list[ImageFile]) -> tuple[int, int]:
    """The most common (H, W) among ``images``; ties go to the larger area."""
    counts = Counter(i.size for i in images)
    (width, height), _ = max(counts.items(), key=lambda item: (item[1], item[0][0] * item[0][1]))
    if len(counts) > 1:
        log.info(
            "images come in %d sizes; the most common, %dx%d, is used", len(counts), width, height
        )
    return height, width
