"""Labelled image folders: one sub-folder per class, as torchvision's ``ImageFolder``.

Training reads a whole dataset this way (``training/imagefolder.py`` adds the train/test
layout and the split); the robustness suite and ``python -m models import`` read an
evaluation set this way. Every file is read and checked before any is decoded, so a bad
folder stops with a message naming every offending file. The policy (docs/models.md, "Your
own image folder"):

* Files and folders whose names start with ``.`` are ignored; files whose extension is not
  an image's are skipped and counted in the log.
* A file that cannot be decoded, is larger than ``MAX_FILE_BYTES`` or has more than
  ``MAX_PIXELS`` pixels (decompression bombs; checked from the header, before decoding) is
  an error listing every such file; so is a class folder with no images.
* EXIF orientation is applied, an animation's first frame taken, and the image fitted to
  the model's input by the service's own policy (``models/imaging.py``: transparency onto
  black, 8-bit grey or RGB, letterbox).
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from models.imaging import GREY_MODES, fit, to_array, to_channels

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
MAX_FILE_BYTES = 64 << 20
MAX_PIXELS = 50_000_000  # a 7,000 x 7,000 photo; a decompression bomb claims far more
_SHOWN_PROBLEMS = 10


class ImageFolderError(ValueError):
    """A folder's layout or one of its files cannot be used; the message names them."""


@dataclass
class ImageFile:
    path: Path
    label: int
    sha256: str
    size: tuple[int, int]  # (W, H) from the header
    grey: bool


def class_folders(parent: Path, minimum: int = 2) -> list[Path]:
    """The class sub-folders of ``parent``, sorted by name; at least ``minimum`` of them."""
    if not parent.is_dir():
        raise ImageFolderError(f"{parent}: not a folder")
    folders = sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ImageFolderError(f"{parent}: no class sub-folders (expected one folder per class)")
    if len(folders) < minimum:
        raise ImageFolderError(f"{parent}: one class ({folders[0].name}); a classifier needs two")
    return folders


def image_files(folders: list[Path], labels: list[int] | None = None) -> list[tuple[Path, int]]:
    """Every image file under each class folder (recursively, sorted), with its label
    (the folder's index, or ``labels``' entry for it)."""
    found: list[tuple[Path, int]] = []
    for index, folder in enumerate(folders):
        label = index if labels is None else labels[index]
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
            raise ImageFolderError(f"{folder}: class {folder.name!r} has no images")
        found += [(path, label) for path in images]
    return found


def read_headers(files: list[tuple[Path, int]], root: Path) -> list[ImageFile]:
    """Each file's digest and header facts; every unusable file is named in one error."""
    images, problems = [], []
    for path, label in files:
        try:
            images.append(_read(path, label))
        except _BadImage as exc:
            problems.append(f"{path.relative_to(root)} ({exc})")
    if problems:
        raise ImageFolderError(
            f"{root}: {len(problems)} images cannot be used: {_listed(problems)}. "
            "Remove or replace them and run again"
        )
    return images


def decode_files(
    images: list[ImageFile], shape: tuple[int, int, int], root: Path
) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, H, W) uint8 pixels and (N,) int64 labels, fitted to ``shape``."""
    pixels = np.empty((len(images), *shape), dtype=np.uint8)
    problems = []
    for index, image in enumerate(images):
        try:
            pixels[index] = decode_bytes(_bytes(image.path), shape)
        except _BadImage as exc:
            problems.append(f"{image.path.relative_to(root)} ({exc})")
    if problems:
        raise ImageFolderError(
            f"{root}: {len(problems)} images cannot be decoded: {_listed(problems)}. "
            "Remove or replace them and run again"
        )
    return pixels, np.array([image.label for image in images], dtype=np.int64)


def decode_bytes(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """Bytes -> (C, H, W) uint8, by the policy in the module docstring."""
    channels, height, width = shape
    with _opened(data) as image:
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
            image, _ = fit(to_channels(image, channels), height, width)
        except Exception as exc:  # noqa: BLE001 - truncated or corrupt pixel data
            raise _BadImage(f"decoding failed: {type(exc).__name__}: {exc}") from None
        return to_array(image)


def folder_digest(images: list[ImageFile], root: Path) -> str:
    """sha256 over each file's relative path, label and content sha256, in order."""
    digest = hashlib.sha256()
    for image in images:
        line = f"{image.path.relative_to(root).as_posix()}\0{image.label}\0{image.sha256}\n"
        digest.update(line.encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class LabelledImages:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64, indices into the model's class names
    sha256: str  # folder_digest


def read_labelled_folder(
    root: Path | str, input_shape: tuple[int, int, int], class_names: list[str]
) -> LabelledImages:
    """A folder of class sub-folders as a model's evaluation set.

    Each sub-folder must be named after one of the model's ``class_names`` (it may hold
    only some classes); labels are indices into ``class_names``.
    """
    root = Path(root)
    folders = class_folders(root, minimum=1)
    unknown = sorted(f.name for f in folders if f.name not in class_names)
    if unknown:
        shown = ", ".join(class_names[:20]) + (", ..." if len(class_names) > 20 else "")
        raise ImageFolderError(
            f"{root}: sub-folders {', '.join(unknown)} name no class of the model "
            f"(its classes: {shown})"
        )
    files = image_files(folders, [class_names.index(f.name) for f in folders])
    headers = read_headers(files, root)
    pixels, labels = decode_files(headers, tuple(input_shape), root)
    return LabelledImages(pixels, labels, folder_digest(headers, root))


def _listed(problems: list[str]) -> str:
    more = len(problems) - _SHOWN_PROBLEMS
    return "; ".join(problems[:_SHOWN_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")


class _BadImage(Exception):
    pass


def _read(path: Path, label: int) -> ImageFile:
    """The file's digest and header facts; refuses oversized files and pixel counts."""
    data = _bytes(path)
    with _opened(data) as image:
        sha256 = hashlib.sha256(data).hexdigest()
        return ImageFile(path, label, sha256, image.size, image.mode in GREY_MODES)


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
