"""Readers for the official MNIST and CIFAR-10 files, from any local folder, with verified download.

MNIST: the four IDX files (``train-images-idx3-ubyte.gz`` ...), gzipped or not.
CIFAR-10: the official python tarball ``cifar-10-python.tar.gz``, its extracted
``cifar-10-batches-py/`` batch files, or an ``.npz`` with ``x_train``,
``y_train``, ``x_test``, ``y_test`` (images NHWC or NCHW uint8).

Every reader returns uint8 images (N, C, H, W) and int64 labels (N,), and the
sha256 of each file it read, which training records in the checkpoint manifest.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import logging
import pickle  # noqa: S403 - CIFAR-10's official batches are pickles; see _load_cifar_batch
import shutil
import struct
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy._core.multiarray import _reconstruct

from models.checkpoint import sha256_file

log = logging.getLogger(__name__)


class DatasetError(Exception):
    """Dataset files are missing, malformed or fail their checksum."""


@dataclass
class Split:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    files_sha256: dict[str, str] = field(default_factory=dict)
    # Known for an image folder; empty for the official datasets (models.registry.DATASETS).
    class_names: tuple[str, ...] = ()
    input_shape: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class OfficialFile:
    name: str
    md5: str
    urls: tuple[str, ...]


# The MNIST host is often down; the second address is the mirror torchvision uses.
_MNIST_BASES = (
    "http://yann.lecun.com/exdb/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
MNIST_FILES = tuple(
    OfficialFile(name, md5, tuple(base + name for base in _MNIST_BASES))
    for name, md5 in (
        ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    )
)
CIFAR10_FILES = (
    OfficialFile(
        "cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    ),
)
OFFICIAL_FILES = {"mnist": MNIST_FILES, "cifar10": CIFAR10_FILES}


def load_dataset(name: str, data_dir: Path | str, download: bool = False) -> Dataset:
    data_dir = Path(data_dir)
    if download:
        download_official(name, data_dir)
    if name == "mnist":
        return load_mnist(data_dir)
    if name == "cifar10":
        return load_cifar10(data_dir)
    raise DatasetError(f"unknown dataset {name!r}; valid datasets: cifar10, mnist")


# --- download -------------------------------------------------------------------------------


def download_official(name: str, data_dir: Path, timeout_s: float = 60.0) -> None:
    """Fetch the official files that are absent and verify every file's published md5."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for official in OFFICIAL_FILES[name]:
        target = data_dir / official.name
        if not target.exists():
            _fetch_first_working(official, target, timeout_s)
        actual = _md5(target)
        if actual != official.md5:
            raise DatasetError(
                f"{target}: md5 {actual} does not match the published {official.md5}; "
                "delete the file and download again"
            )
        log.info("verified %s (md5 %s)", target, actual)


def _fetch_first_working(official: OfficialFile, target: Path, timeout_s: float) -> None:
    errors = []
    partial = target.with_name(target.name + ".part")
    for url in official.urls:
        log.info("downloading %s", url)
        try:
            with (
                urllib.request.urlopen(url, timeout=timeout_s) as response,
                open(partial, "wb") as f,
            ):
                shutil.copyfileobj(response, f)
        except OSError as exc:
            errors.append(f"{url}: {exc}")
            partial.unlink(missing_ok=True)
            continue
        if _md5(partial) == official.md5:
            partial.replace(target)
            return
        errors.append(f"{url}: md5 mismatch")
        partial.unlink(missing_ok=True)
    raise DatasetError(f"could not download {official.name}: {'; '.join(errors)}")


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --- MNIST ----------------------------------------------------------------------------------


def load_mnist(data_dir: Path) -> Dataset:
    hashes: dict[str, str] = {}

    def read(stem: str, ndim: int) -> np.ndarray:
        path = _find(data_dir, (f"{stem}.gz", stem))
        hashes[path.name] = sha256_file(path)
        return read_idx(path, ndim)

    train = Split(read("train-images-idx3-ubyte", 3)[:, None], read("train-labels-idx1-ubyte", 1))
    test = Split(read("t10k-images-idx3-ubyte", 3)[:, None], read("t10k-labels-idx1-ubyte", 1))
    for split_name, split in (("train", train), ("test", test)):
        if len(split.images) != len(split.labels):
            raise DatasetError(
                f"MNIST {split_name}: {len(split.images)} images but {len(split.labels)} labels"
            )
        split.labels = split.labels.astype(np.int64)
        if split.labels.max(initial=0) > 9:
            raise DatasetError(f"MNIST {split_name}: labels outside 0..9")
    return Dataset("mnist", train, test, hashes)


def read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (big-endian header), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    if len(raw) < 4:
        raise DatasetError(f"{path}: too short to be an IDX file")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or ndim != expected_ndim:
        raise DatasetError(
            f"{path}: bad IDX magic 0x{raw[:4].hex()} "
            f"(expected unsigned bytes in {expected_ndim} dims)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(shape))
    if len(raw) - header != count:
        raise DatasetError(
            f"{path}: header promises {count} bytes of data for shape {shape}, "
            f"file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


# --- CIFAR-10 -------------------------------------------------------------------------------

_CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


def load_cifar10(data_dir: Path) -> Dataset:
    """Read CIFAR-10 from the tarball, the extracted batches or an npz, whichever is present."""
    tarball = data_dir / "cifar-10-python.tar.gz"
    batches = next(
        (d for d in (data_dir / "cifar-10-batches-py", data_dir) if (d / "test_batch").is_file()),
        None,
    )
    npz = next(
        iter(sorted(data_dir.glob("cifar10*.npz")) + sorted(data_dir.glob("cifar-10*.npz"))), None
    )
    if batches is not None:
        return _cifar_from_batches(batches)
    if tarball.is_file():
        return _cifar_from_tarball(tarball)
    if npz is not None:
        return _cifar_from_npz(npz)
    raise DatasetError(
        f"{data_dir}: no CIFAR-10 found (looked for cifar-10-python.tar.gz, "
        "cifar-10-batches-py/ with data_batch_1..5 and test_batch, or cifar10*.npz); "
        "pass --download to fetch the official tarball"
    )


def _cifar_from_batches(folder: Path) -> Dataset:
    hashes = {}
    parts = []
    for name in (*_CIFAR_TRAIN_BATCHES, "test_batch"):
        path = folder / name
        if not path.is_file():
            raise DatasetError(f"{path}: CIFAR-10 batch file missing")
        hashes[name] = sha256_file(path)
        parts.append(_load_cifar_batch(path.read_bytes(), str(path)))
    train = Split(
        np.concatenate([p.images for p in parts[:-1]]),
        np.concatenate([p.labels for p in parts[:-1]]),
    )
    return Dataset("cifar10", train, parts[-1], hashes)


def _cifar_from_tarball(tarball: Path) -> Dataset:
    parts = {}
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and name in (*_CIFAR_TRAIN_BATCHES, "test_batch"):
                    extracted = tar.extractfile(member)
                    parts[name] = _load_cifar_batch(extracted.read(), f"{tarball}:{member.name}")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{tarball}: not a readable tar.gz ({exc})") from None
    missing = sorted(set((*_CIFAR_TRAIN_BATCHES, "test_batch")) - set(parts))
    if missing:
        raise DatasetError(f"{tarball}: batches missing from the archive: {', '.join(missing)}")
    train = Split(
        np.concatenate([parts[n].images for n in _CIFAR_TRAIN_BATCHES]),
        np.concatenate([parts[n].labels for n in _CIFAR_TRAIN_BATCHES]),
    )
    return Dataset("cifar10", train, parts["test_batch"], {tarball.name: sha256_file(tarball)})


def _load_cifar_batch(raw: bytes, where: str) -> Split:
    # The official batches are Python pickles. We only unpickle plain containers: the
    # restricted unpickler refuses every global, so a crafted file cannot run code.
    try:
        batch = _PlainUnpickler(raw).load()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise DatasetError(f"{where}: not a CIFAR-10 batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"{where}: CIFAR-10 batch lacks 'data' or 'labels'")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DatasetError(f"{where}: expected data (N, 3072) and N labels, got {data.shape}")
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DatasetError(f"{where}: labels outside 0..9")
    return Split(data.reshape(-1, 3, 32, 32), labels)


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays; refuses every other global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        # Python 3 writes bytes in protocol-2 pickles through codecs.encode.
        ("_codecs", "encode"): codecs.encode,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def __init__(self, raw: bytes) -> None:
        super().__init__(io.BytesIO(raw), encoding="bytes")

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a CIFAR-10 batch"
            ) from None


def _cifar_from_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except KeyError as exc:
        raise DatasetError(f"{path}: npz lacks {exc}") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable npz ({exc})") from None
    splits = []
    for x, y in ((arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])):
        if x.dtype != np.uint8 or x.ndim != 4:
            raise DatasetError(f"{path}: images must be uint8 with 4 dims, got {x.dtype} {x.shape}")
        if x.shape[1:] == (32, 32, 3):
            x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
        if x.shape[1:] != (3, 32, 32) or len(x) != len(y.reshape(-1)):
            raise DatasetError(
                f"{path}: expected (N, 32, 32, 3) or (N, 3, 32, 32) images and N labels"
            )
        splits.append(Split(np.ascontiguousarray(x), y.reshape(-1).astype(np.int64)))
    return Dataset("cifar10", splits[0], splits[1], {path.name: sha256_file(path)})


def _find(data_dir: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (data_dir / name).is_file():
            return data_dir / name
    raise DatasetError(
        f"{data_dir}: none of {', '.join(names)} found; pass --data-dir to the folder holding "
        "the official files, or --download to fetch them"
    )
