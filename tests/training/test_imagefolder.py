"""Your own image folder: trained for one short epoch into a checkpoint that loads, and each
bad folder refused before training with a message that names the problem."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from models import imagefolder
from models.checkpoint import load_checkpoint
from training.cli import main
from training.datasets import DatasetError
from training.imagefolder import FolderOptions, load_image_folder

CLASSES = ("circle", "square", "triangle")


def picture(label: int, rng, size=(24, 20), mode="RGB") -> Image.Image:
    """A learnable image: a bright patch whose row depends on the class, on dark noise."""
    width, height = size
    pixels = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    row = 2 + 5 * label
    pixels[row : row + 5, 3 : width - 3] = 230
    image = Image.fromarray(pixels)
    return image if mode == "RGB" else image.convert(mode)


def make_folder(root, per_class=(12, 4), layout="split", seed=0):
    """``root`` with train/ and test/ (layout "split") or class folders only ("flat")."""
    rng = np.random.default_rng(seed)
    parts = (
        (("train", per_class[0]), ("test", per_class[1]))
        if layout == "split"
        else (("", sum(per_class)),)
    )
    for part, count in parts:
        for label, name in enumerate(CLASSES):
            folder = root / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                # Mixed sizes and modes: every fourth image is larger, grey or paletted.
                size = (48, 40) if i % 4 == 1 else (24, 20)
                mode = {2: "L", 3: "P"}.get(i % 4, "RGB")
                picture(label, rng, size, mode).save(folder / f"{i}.png")
    return root


def train_args(data_dir, out, *extra: str) -> list[str]:
    return [
        "train",
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(data_dir),
        "--defense",
        "cq",
        "--levels",
        "4",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
        *extra,
    ]


def test_an_image_folder_trains_into_a_checkpoint_that_loads(tmp_path) -> None:
    data = make_folder(tmp_path / "My Shapes")
    (data / "train" / "circle" / "README.txt").write_text("not an image, skipped")
    (data / "train" / "square" / ".DS_Store").write_bytes(b"\0\1")
    out = tmp_path / "ck"
    args = ["--architecture", "resnet20", "--architecture-arg", "blocks_per_stage=1"]
    assert main(train_args(data, out, *args)) == 0
    loaded = load_checkpoint(out)
    manifest = loaded.manifest
    assert manifest.dataset == "my-shapes"
    assert manifest.class_names == list(CLASSES)
    assert manifest.input_shape == [3, 20, 24]  # RGB and the most common size
    assert manifest.architecture_args == {"blocks_per_stage": 1}
    assert manifest.metrics["test_samples"] == 12
    (digest,) = manifest.data_sha256.values()
    assert len(digest) == 64
    assert json.loads((out / "manifest.json").read_text())["training"]["dataset"] == "imagefolder"


def test_a_held_out_split_is_fixed_by_the_seed(tmp_path) -> None:
    data = make_folder(tmp_path / "flat", layout="flat")
    first = load_image_folder(data, FolderOptions(split=0.25, seed=1, input_size=(16, 16)))
    again = load_image_folder(data, FolderOptions(split=0.25, seed=1, input_size=(16, 16)))
    other = load_image_folder(data, FolderOptions(split=0.25, seed=2, input_size=(16, 16)))
    assert len(first.test.labels) == 12 and len(first.train.labels) == 36
    assert np.array_equal(first.test.images, again.test.images)
    assert not np.array_equal(first.test.images, other.test.images)
    assert first.input_shape == (3, 16, 16)
    grey = load_image_folder(data, FolderOptions(split=0.25, channels=1))
    assert grey.input_shape == (1, 20, 24)


def test_letterbox_keeps_the_aspect_ratio_and_pads_with_black() -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (40, 10), (255, 255, 255, 255)).save(buffer, "PNG")
    pixels = imagefolder.decode_bytes(buffer.getvalue(), (3, 20, 20))  # 40x10 -> 20x5, centred
    assert pixels.shape == (3, 20, 20)
    assert pixels[:, :7].max() == 0 and pixels[:, 12:].max() == 0
    assert pixels[:, 7:12].min() == 255


def test_an_installed_architecture_trains_on_a_folder(tmp_path, monkeypatch) -> None:
    from tests.models.fixtures.plugin import install_test_architecture

    install_test_architecture(tmp_path, monkeypatch)
    data = make_folder(tmp_path / "flat", layout="flat")
    out = tmp_path / "mlp"
    extra = ["--split", "0.25", "--architecture", "test-mlp", "--architecture-arg", "hidden=6"]
    assert main(train_args(data, out, *extra)) == 0
    assert load_checkpoint(out).manifest.architecture == "test-mlp"


def _bomb(path) -> None:
    Image.new("1", (8000, 8000)).save(path)  # 64 M pixels in a few kB of PNG


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_classes", "no class sub-folders"),
        ("one_class", "one class"),
        ("empty_class", "class 'square' has no images"),
        ("corrupt", "circle/0.png .*not a readable image"),
        ("truncated", "cannot be decoded: .*circle/1.png"),
        ("bomb", "bomb.png .*8000x8000 pixels, over the cap"),
        ("mismatch", "same classes; only in one: owl"),
        ("no_split", "pass --split"),
        ("official_name", "would pass for the official dataset"),
        ("not_a_folder", "not a folder"),
    ],
)
def test_bad_folders_are_refused_naming_the_problem(tmp_path, caplog, case, message) -> None:
    data = tmp_path / "shapes"
    if case == "official_name":
        data = tmp_path / "cifar10"
    make_folder(data, per_class=(4, 2))
    train = data / "train"
    if case == "no_classes":
        for name in CLASSES:
            for part in ("train", "test"):
                for file in (data / part / name).iterdir():
                    file.unlink()
                (data / part / name).rmdir()
    elif case == "one_class":
        for part in ("train", "test"):
            for name in CLASSES[1:]:
                for file in (data / part / name).iterdir():
                    file.unlink()
                (data / part / name).rmdir()
    elif case == "empty_class":
        for file in (train / "square").iterdir():
            file.unlink()
        (train / "square" / "notes.txt").write_text("no images here")
    elif case == "corrupt":
        (train / "circle" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    elif case == "truncated":
        raw = (train / "circle" / "1.png").read_bytes()
        (train / "circle" / "1.png").write_bytes(raw[: len(raw) // 2])
    elif case == "bomb":
        _bomb(train / "circle" / "bomb.png")
    elif case == "mismatch":
        (data / "test" / "owl").mkdir()
        picture(0, np.random.default_rng(0)).save(data / "test" / "owl" / "0.png")
    elif case == "no_split":
        for part in ("train", "test"):
            (data / part).rename(tmp_path / f"moved-{part}")
        (data / "a").mkdir()
        (data / "b").mkdir()
    elif case == "not_a_folder":
        data = tmp_path / "absent"
    assert main(train_args(data, tmp_path / "ck")) == 2
    assert re.search(message, caplog.text), caplog.text
    assert not (tmp_path / "ck").exists()


def test_a_training_split_smaller_than_a_batch_is_refused_before_training(tmp_path, caplog) -> None:
    """An epoch drops its last partial batch: 12 images in batches of 16 would train nothing
    and still write a checkpoint."""
    data = make_folder(tmp_path / "shapes", per_class=(4, 2))  # 12 training images
    small = ("--architecture", "resnet20", "--architecture-arg", "blocks_per_stage=1")
    args = train_args(data, tmp_path / "ck", *small)
    args[args.index("--batch-size") + 1] = "16"
    assert main(args) == 2
    assert "the training split has 12 images, fewer than one batch of 16" in caplog.text
    assert "--batch-size 12 or less" in caplog.text
    assert not (tmp_path / "ck").exists()
    args[args.index("--batch-size") + 1] = "12"  # exactly one batch: trains
    assert main(args) == 0
    assert load_checkpoint(tmp_path / "ck").manifest.metrics["test_samples"] == 6


def test_oversized_files_are_refused(tmp_path, monkeypatch) -> None:
    data = make_folder(tmp_path / "shapes", per_class=(2, 1))
    monkeypatch.setattr(imagefolder, "MAX_FILE_BYTES", 100)
    with pytest.raises(DatasetError, match="larger than 100 bytes"):
        load_image_folder(data, FolderOptions())


def test_an_interrupted_folder_run_resumes_to_the_same_weights(tmp_path, monkeypatch) -> None:
    from safetensors.torch import load_file

    from training import resume
    from training.config import TrainConfig
    from training.loop import train

    data = make_folder(tmp_path / "flat", per_class=(6, 2), layout="flat")

    def config(name):
        return TrainConfig(
            dataset="imagefolder",
            defense="tq",
            out=tmp_path / name,
            data_dir=data,
            epochs=2,
            batch_size=8,
            device="cpu",
            progress=False,
            input_size=(12, 12),
            split=0.25,
            architecture="resnet20",
            architecture_args={"blocks_per_stage": 1, "width": 4},
        )

    train(config("full"))
    original = resume.save

    def save_then_crash(cfg, model, optimizer, epochs_done, history, *average):
        original(cfg, model, optimizer, epochs_done, history, *average)
        raise KeyboardInterrupt

    monkeypatch.setattr(resume, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(config("cut"))
    monkeypatch.setattr(resume, "save", original)
    state = resume.state_dir(config("cut")) / "state.json"
    meta = json.loads(state.read_text())
    assert meta["config"]["input_size"] == [12, 12]
    train(config("cut"))
    full = load_file(str(tmp_path / "full" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_state_saved_before_the_new_keys_existed_still_resumes(tmp_path, monkeypatch) -> None:
    from training import resume
    from training.config import TrainConfig

    cfg = TrainConfig(dataset="mnist", defense="none", out=tmp_path / "o", data_dir=tmp_path)
    saved = {k: cfg.to_json()[k] for k in TrainConfig.RESUME_KEYS}
    for key in ("architecture_args", "input_size", "channels", "split"):
        del saved[key]
    assert {k: saved.get(k, resume._default(k)) for k in TrainConfig.RESUME_KEYS} == {
        k: cfg.to_json()[k] for k in TrainConfig.RESUME_KEYS
    }


def test_normalization_is_trained_behind_the_quantizer_and_recorded(tmp_path, caplog) -> None:
    data = make_folder(tmp_path / "flat", per_class=(6, 2), layout="flat")
    out = tmp_path / "ck"
    extra = ["--split", "0.25", "--channels", "1", "--mean", "0.2", "--std", "0.3"]
    assert main(train_args(data, out, *extra, "--architecture", "resnet20")) == 0
    loaded = load_checkpoint(out)
    assert loaded.manifest.normalization == {"mean": [0.2], "std": [0.3]}
    assert loaded.model.normalization is not None
    bad = ["--split", "0.25", "--mean", "0.2,0.2", "--std", "0.3,0.3"]  # RGB: 3 channels
    assert main(train_args(data, tmp_path / "bad", *bad)) == 2
    assert "2 values for 3 channels" in caplog.text
