"""Your own images: a folder with one sub-folder per class, as torchvision's ``ImageFolder``.

Layouts (class names are the sub-folder names, sorted; labels are their indices):

* ``ROOT/train/CLASS/*`` and ``ROOT/test/CLASS/*``: the split is yours; both sides must
  name the same classes.
* ``ROOT/CLASS/*`` with ``--split F``: a fraction F of each class is held out for testing,
  chosen by the seed, so the same seed and files give the same split.

Every image is read, checked and decoded before training starts, so a bad file stops the
run with a message naming it, never mid-epoch. The policy (docs/models.md, "Your own image
folder"), kept close to how the service fits an upload (service/imaging.py):

* Files and folders whose names start with ``.`` are ignored; files whose extension is
  not an image's are skipped and counted in the log.
* A file that cannot be decoded, is larger than ``MAX_FILE_BYTES`` or has more than
  ``MAX_PIXELS`` pixels (decompression bombs; checked from the header, before decoding)
  is an error listing every such file.
* A class with no images, fewer than two classes, or a class present in only one of
  ``train/`` and ``test/`` is an error.
* EXIF orientation is applied, transparency composited onto black, the first frame of an
  animation taken; any mode becomes 8-bit grey (1 channel) or RGB (3 channels).
* Images are fitted to the input size by letterbox: scaled to fit with the aspect ratio
  kept (box filter shrinking, bilinear enlarging), the rest padded with black.
* Without ``--input-size`` the size is the most common one among the training images;
  without ``--channels`` it is 1 if every image is grey, else 3.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from models.registry import DATASETS
from training.datasets import Dataset, DatasetError, Split

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
MAX_FILE_BYTES = 64 << 20
MAX_PIXELS = 50_000_000  # a 7,000 x 7,000 photo; a decompression bomb claims far more
MAX_SIDE = 1024  # as the manifest schema's cap on a model's input side
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
_SHOWN_PROBLEMS = 10


@dataclass(frozen=True)
class FolderOptions:
    input_size: tuple[int, int] | None = None  # (H, W); None: the most common size
    channels: int | None = None  # 1 or 3; None: 1 if every image is grey
    split: float | None = None  # held-out fraction when there is no train/ and test/
    seed: int = 0


@dataclass
class _Image:
    path: Path
    label: int
    sha256: str
    size: tuple[int, int]  # (W, H) from the header
    grey: bool


def dataset_name(root: Path) -> str:
    """The folder's name as a manifest dataset name (lower case, [a-z0-9_-], 64 at most)."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", root.resolve().name.lower()).strip("-_")[:64]
    return slug or "imagefolder"


def load_image_folder(root: Path | str, options: FolderOptions) -> Dataset:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    name = dataset_name(root)
    if name in DATASETS:
        raise DatasetError(
            f"{root}: an image folder named {name!r} would pass for the official dataset; "
            "rename the folder (or use --dataset " + name + " for the official files)"
        )
    train_files, test_files, classes = _layout(root, options)
    train = _read_all(train_files, root)
    test = _read_all(test_files, root)
    channels = options.channels or (1 if all(i.grey for i in train + test) else 3)
    height, width = options.input_size or _common_size(train)
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise DatasetError(f"input size {height}x{width} is outside 1..{MAX_SIDE}")
    shape = (channels, height, width)
    digest = _folder_digest(train + test, root)
    resized = sum(i.size != (width, height) for i in train + test)
    if resized:
        log.info("%d of %d images letterboxed to %dx%d", resized, len(train + test), width, height)
    dataset = Dataset(name, _decode_all(train, shape, root), _decode_all(test, shape, root))
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
        train_classes = _class_folders(root / "train")
        test_classes = _class_folders(root / "test")
        if [c.name for c in train_classes] != [c.name for c in test_classes]:
            only = sorted({c.name for c in train_classes} ^ {c.name for c in test_classes})
            raise DatasetError(
                f"{root}: train/ and test/ must name the same classes; only in one: "
                f"{', '.join(only)}"
            )
        names = tuple(c.name for c in train_classes)
        return _files(train_classes), _files(test_classes), names
    if options.split is None:
        raise DatasetError(
            f"{root}: no train/ and test/ sub-folders; pass --split 0.2 (say) to hold out "
            "that fraction of each class for testing"
        )
    if not 0 < options.split < 1:
        raise DatasetError(f"--split must lie strictly between 0 and 1, got {options.split}")
    classes = _class_folders(root)
    train, test = [], []
    rng = np.random.default_rng(options.seed)
    for label, folder in enumerate(classes):
        files = _files([folder], label)
        if len(files) < 2:
            raise DatasetError(f"{folder}: one image; a split needs at least two per class")
        order = rng.permutation(len(files))
        held = min(len(files) - 1, max(1, round(options.split * len(files))))
        test += [files[i] for i in sorted(order[:held])]
        train += [files[i] for i in sorted(order[held:])]
    return train, test, tuple(c.name for c in classes)


def _class_folders(parent: Path) -> list[Path]:
    folders = sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"{parent}: no class sub-folders (expected one folder per class)")
    if len(folders) < 2:
        raise DatasetError(f"{parent}: one class ({folders[0].name}); a classifier needs two")
    return folders


def _files(class_folders: list[Path], first_label: int = 0) -> list[tuple[Path, int]]:
    """Every image file under each class folder (recursively, sorted), with its label."""
    found: list[tuple[Path, int]] = []
    for label, folder in enumerate(class_folders, start=first_label):
        images, skipped = [], []
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder).parts
            if any(part.startswith(".") for part in relative) or not path.is_file():
                continue
            (images if path.suffix.lower() in IMAGE_EXTENSIONS else skipped).append(path)
        if skipped:
            log.warning(
                "%s: skipped %d files that are not images by extension (%s)",
                folder,
                len(skipped),
                ", ".join(p.name for p in skipped[:_SHOWN_PROBLEMS]),
            )
        if not images:
            raise DatasetError(f"{folder}: class {folder.name!r} has no images")
        found += [(path, label) for path in images]
    return found


def _read_all(files: list[tuple[Path, int]], root: Path) -> list[_Image]:
    images, problems = [], []
    for path, label in files:
        try:
            images.append(_read(path, label))
        except _BadImage as exc:
            problems.append(f"{path.relative_to(root)} ({exc})")
    if problems:
        shown = "; ".join(problems[:_SHOWN_PROBLEMS])
        more = f"; and {len(problems) - _SHOWN_PROBLEMS} more" if len(problems) > 10 else ""
        raise DatasetError(
            f"{root}: {len(problems)} images cannot be used: {shown}{more}. "
            "Remove or replace them and run again"
        )
    return images


class _BadImage(Exception):
    pass


def _read(path: Path, label: int) -> _Image:
    """The file's digest and header facts; refuses oversized files and pixel counts."""
    data = _bytes(path)
    with _opened(data) as image:
        sha256 = hashlib.sha256(data).hexdigest()
        return _Image(path, label, sha256, image.size, image.mode in _GREY_MODES)


def _bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise _BadImage(f"unreadable: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise _BadImage(f"file larger than {MAX_FILE_BYTES} bytes")
    return data


class _opened:  # noqa: N801 - used as a context manager, like open()
    """Open from bytes with Pillow, header only; every decoder failure is a _BadImage."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.image: Image.Image | None = None

    def __enter__(self) -> Image.Image:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                self.image = Image.open(io.BytesIO(self.data))
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise _BadImage(f"decompression bomb refused: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - Pillow signals bad bytes with many types
            raise _BadImage(f"not a readable image: {type(exc).__name__}") from None
        width, height = self.image.size
        if width * height > MAX_PIXELS:
            raise _BadImage(f"{width}x{height} pixels, over the cap of {MAX_PIXELS}")
        return self.image

    def __exit__(self, *exc: object) -> None:
        if self.image is not None:
            self.image.close()


def _common_size(images: list[_Image]) -> tuple[int, int]:
    """The most common (H, W) among ``images``; ties go to the larger area."""
    counts = Counter(i.size for i in images)
    (width, height), _ = max(counts.items(), key=lambda item: (item[1], item[0][0] * item[0][1]))
    if len(counts) > 1:
        log.info(
            "images come in %d sizes; the most common, %dx%d, is used", len(counts), width, height
        )
    return height, width


def _folder_digest(images: list[_Image], root: Path) -> str:
    """sha256 over each file's relative path, label and content sha256, in order."""
    digest = hashlib.sha256()
    for image in images:
        line = f"{image.path.relative_to(root).as_posix()}\0{image.label}\0{image.sha256}\n"
        digest.update(line.encode())
    return digest.hexdigest()


def _decode_all(images: list[_Image], shape: tuple[int, int, int], root: Path) -> Split:
    pixels = np.empty((len(images), *shape), dtype=np.uint8)
    problems = []
    for index, image in enumerate(images):
        try:
            pixels[index] = _decode(_bytes(image.path), shape)
        except _BadImage as exc:
            problems.append(f"{image.path.relative_to(root)} ({exc})")
    if problems:
        raise DatasetError(
            f"{root}: {len(problems)} images cannot be decoded: "
            f"{'; '.join(problems[:_SHOWN_PROBLEMS])}. Remove or replace them and run again"
        )
    labels = np.array([image.label for image in images], dtype=np.int64)
    return Split(pixels, labels)


def _decode(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """Bytes -> (C, H, W) uint8, by the policy in the module docstring."""
    channels, height, width = shape
    with _opened(data) as image:
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
            image = _flatten(image, channels)
            image = _letterbox(image, width, height)
        except Exception as exc:  # noqa: BLE001 - truncated or corrupt pixel data
            raise _BadImage(f"decoding failed: {type(exc).__name__}: {exc}") from None
        pixels = np.asarray(image, dtype=np.uint8)
    # (H, W) -> (1, H, W); (H, W, C) -> (C, H, W)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _flatten(image: Image.Image, channels: int) -> Image.Image:
    """Any mode -> "L" or "RGB", transparency composited onto black."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
        image = Image.fromarray((wide >> 8).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    return image.convert("L" if channels == 1 else "RGB")


def _letterbox(image: Image.Image, width: int, height: int) -> Image.Image:
    if image.size == (width, height):
        return image
    scale = min(width / image.width, height / image.height)
    fitted_w = max(1, min(width, round(image.width * scale)))
    fitted_h = max(1, min(height, round(image.height * scale)))
    shrinking = fitted_w <= image.width and fitted_h <= image.height
    fitted = image.resize(
        (fitted_w, fitted_h),
        Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR,
    )
    canvas = Image.new(image.mode, (width, height), 0 if image.mode == "L" else (0, 0, 0))
    canvas.paste(fitted, ((width - fitted_w) // 2, (height - fitted_h) // 2))
    return canvas
