"""Uploaded sample sets: a NumPy ``.npz`` with ``images`` and ``labels``, checked strictly.

Accepted: exactly two arrays, ``images`` uint8 in (N, C, H, W), (N, H, W, C), or, for
one-channel models, (N, H, W), matching the model's input size; ``labels`` integers,
shape (N,), each a valid class index. Nothing is unpickled (``allow_pickle=False``), and
the archive's declared member sizes are checked before anything is decompressed, so a
small upload cannot inflate into a large allocation.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

from models.evalset import EvalSet
from service.errors import InvalidSamples

MEMBERS = ("images.npy", "labels.npy")
_NPY_HEADER_BYTES = 4096  # generous bound on a .npy member's header


@dataclass(frozen=True)
class SampleSet:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64
    sha256: str

    def eval_set(self) -> EvalSet:
        return EvalSet(
            name=f"upload-{self.sha256[:12]}",
            images=torch.from_numpy(self.images).float() / 255.0,
            labels=torch.from_numpy(self.labels),
            sha256=self.sha256,
        )


def parse_samples(
    data: bytes, input_shape: tuple[int, int, int], classes: int, max_images: int
) -> SampleSet:
    """Validate an upload for a model of ``input_shape`` (C, H, W); ``InvalidSamples`` if bad."""
    if not data:
        raise InvalidSamples("empty sample upload", message="the sample upload is empty")
    _check_archive(data, input_shape, max_images)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise InvalidSamples(
            f"npz arrays unreadable: {exc}",
            message="the arrays could not be read (object arrays and pickles are refused)",
        ) from None
    images = _to_nchw(images, input_shape)
    if len(images) > max_images:
        raise InvalidSamples(
            f"{len(images)} images", message=f"the upload holds more than {max_images} images"
        )
    labels = _checked_labels(labels, len(images), classes)
    return SampleSet(images, labels, hashlib.sha256(data).hexdigest())


def _check_archive(data: bytes, input_shape: tuple[int, int, int], max_images: int) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {info.filename: info.file_size for info in archive.infolist()}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InvalidSamples(
            f"not a zip archive: {exc}", message="the upload is not an .npz archive"
        ) from None
    if sorted(members) != list(MEMBERS):
        raise InvalidSamples(
            f"npz members {sorted(members)[:8]}",
            message="the .npz must hold exactly two arrays, 'images' and 'labels'",
        )
    bounds = {
        "images.npy": max_images * int(np.prod(input_shape)) + _NPY_HEADER_BYTES,
        "labels.npy": max_images * 8 + _NPY_HEADER_BYTES,
    }
    for name, size in members.items():
        if size > bounds[name]:
            raise InvalidSamples(
                f"{name} declares {size} bytes, bound {bounds[name]}",
                message=f"the upload holds more than {max_images} images or oversized arrays",
            )


def _to_nchw(images: np.ndarray, input_shape: tuple[int, int, int]) -> np.ndarray:
    c, h, w = input_shape
    if images.dtype != np.uint8:
        raise InvalidSamples(
            f"images dtype {images.dtype}", message="'images' must be uint8 (0-255 pixels)"
        )
    if images.ndim == 4 and images.shape[1:] == (c, h, w):
        layout = images
    elif images.ndim == 4 and images.shape[1:] == (h, w, c):
        layout = images.transpose(0, 3, 1, 2)
    elif images.ndim == 3 and c == 1 and images.shape[1:] == (h, w):
        layout = images[:, None]
    else:
        wanted = f"(N, {c}, {h}, {w}) or (N, {h}, {w}, {c})" + (
            f" or (N, {h}, {w})" if c == 1 else ""
        )
        raise InvalidSamples(
            f"images shape {images.shape}", message=f"'images' must have shape {wanted}"
        )
    if len(layout) == 0:
        raise InvalidSamples("zero images", message="the upload holds no images")
    return np.ascontiguousarray(layout)


def _checked_labels(labels: np.ndarray, count: int, classes: int) -> np.ndarray:
    if labels.dtype.kind not in "iu" or labels.shape != (count,):
        raise InvalidSamples(
            f"labels {labels.dtype} {labels.shape} for {count} images",
            message="'labels' must be integers of shape (N,), one per image",
        )
    if labels.min() < 0 or labels.max() >= classes:
        raise InvalidSamples(
            f"labels in [{labels.min()}, {labels.max()}]",
            message=f"'labels' must be class indices in [0, {classes})",
        )
    return labels.astype(np.int64)
