"""Tiny dataset files in the official formats, made by the tests themselves."""

import gzip
import pickle
import struct

import numpy as np
import pytest


def synthetic_images(count: int, channels: int, side: int, seed: int):
    """Learnable images: class k is a bright 6x6 square at a position set by k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    images = rng.integers(0, 60, (count, channels, side, side)).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = 2 + 8 * (label // 4), 2 + 8 * (label % 4)
        images[i, :, row : row + 6, col : col + 6] = 230
    return images, labels.astype(np.int64)


def write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist(folder, train_count=512, test_count=200):
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count, seed in (("train", train_count, 1), ("t10k", test_count, 2)):
        images, labels = synthetic_images(count, 1, 28, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images[:, 0])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def cifar_batch(count, seed) -> bytes:
    images, labels = synthetic_images(count, 3, 32, seed)
    batch = {b"data": images.reshape(count, -1), b"labels": labels.tolist()}
    return pickle.dumps(batch, protocol=2)


@pytest.fixture
def tiny_mnist(tmp_path):
    return write_mnist(tmp_path / "mnist")
