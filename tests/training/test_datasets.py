import gzip
import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest

from training import datasets
from training.datasets import (
    DatasetError,
    OfficialFile,
    download_official,
    load_dataset,
    read_idx,
)

from .conftest import cifar_batch, synthetic_images, write_idx, write_mnist


def test_mnist_reader_returns_nchw_uint8_and_hashes(tiny_mnist):
    data = load_dataset("mnist", tiny_mnist)
    assert data.train.images.shape == (512, 1, 28, 28)
    assert data.train.images.dtype == np.uint8
    assert data.test.labels.dtype == np.int64
    assert len(data.files_sha256) == 4
    expected, _ = synthetic_images(200, 1, 28, 2)
    assert np.array_equal(data.test.images, expected)


def test_mnist_reader_accepts_uncompressed_files(tmp_path):
    folder = write_mnist(tmp_path / "m")
    for gz in folder.glob("*.gz"):
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    assert load_dataset("mnist", folder).train.images.shape == (512, 1, 28, 28)


def test_missing_mnist_file_is_a_clear_error(tiny_mnist):
    (tiny_mnist / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz.*--download"):
        load_dataset("mnist", tiny_mnist)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x00\x00\x08", "too short"),
        (b"\x00\x00\x0d\x03" + b"\x00" * 12, "bad IDX magic"),
        (
            b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x1c\x00\x00\x00\x1c" + b"\x00" * 10,
            "header promises 1568 bytes",
        ),
    ],
)
def test_malformed_idx_is_refused(tmp_path, payload, message):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(payload))
    with pytest.raises(DatasetError, match=message):
        read_idx(path, 3)


def test_mismatched_image_and_label_counts_are_refused(tmp_path):
    folder = write_mnist(tmp_path / "m")
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(7, np.uint8))
    with pytest.raises(DatasetError, match="200 images but 7 labels"):
        load_dataset("mnist", folder)


def _cifar_batches(folder):
    folder.mkdir(parents=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(cifar_batch(20, i))
    (folder / "test_batch").write_bytes(cifar_batch(30, 9))
    return folder


def test_cifar_from_batch_files(tmp_path):
    _cifar_batches(tmp_path / "cifar-10-batches-py")
    data = load_dataset("cifar10", tmp_path)
    assert data.train.images.shape == (100, 3, 32, 32)
    assert data.test.images.shape == (30, 3, 32, 32)
    expected, labels = synthetic_images(30, 3, 32, 9)
    assert np.array_equal(data.test.images, expected)
    assert np.array_equal(data.test.labels, labels)


def test_cifar_from_tarball(tmp_path):
    batches = _cifar_batches(tmp_path / "src" / "cifar-10-batches-py")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(batches, arcname="cifar-10-batches-py")
    data = load_dataset("cifar10", tmp_path)
    assert data.train.images.shape == (100, 3, 32, 32)
    assert list(data.files_sha256) == ["cifar-10-python.tar.gz"]


def test_cifar_from_npz_nhwc(tmp_path):
    x_train, y_train = synthetic_images(40, 3, 32, 1)
    x_test, y_test = synthetic_images(10, 3, 32, 2)
    np.savez(
        tmp_path / "cifar10.npz",
        x_train=x_train.transpose(0, 2, 3, 1),
        y_train=y_train[:, None],
        x_test=x_test.transpose(0, 2, 3, 1),
        y_test=y_test[:, None],
    )
    data = load_dataset("cifar10", tmp_path)
    assert np.array_equal(data.test.images, x_test)
    assert np.array_equal(data.test.labels, y_test)


def test_cifar_batch_with_code_in_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = _cifar_batches(tmp_path / "cifar-10-batches-py")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DatasetError, match="builtins.print is not allowed"):
        load_dataset("cifar10", tmp_path)


def test_absent_cifar_says_what_was_looked_for(tmp_path):
    with pytest.raises(DatasetError, match="no CIFAR-10 found.*--download"):
        load_dataset("cifar10", tmp_path)


def test_download_verifies_md5_and_refuses_mismatch(tmp_path, monkeypatch):
    good = b"official bytes"

    official = OfficialFile("f.bin", hashlib.md5(good).hexdigest(), ("http://mirror.invalid/f",))
    monkeypatch.setitem(datasets.OFFICIAL_FILES, "mnist", (official,))
    served = {"body": b"corrupted"}

    def fake_urlopen(url, timeout):
        return io.BytesIO(served["body"])

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    with pytest.raises(DatasetError, match="md5 mismatch"):
        download_official("mnist", tmp_path)
    assert not (tmp_path / "f.bin").exists()  # nothing half-downloaded is left behind

    served["body"] = good
    download_official("mnist", tmp_path)
    assert (tmp_path / "f.bin").read_bytes() == good

    (tmp_path / "f.bin").write_bytes(b"tampered later")
    with pytest.raises(DatasetError, match="does not match the published"):
        download_official("mnist", tmp_path)
