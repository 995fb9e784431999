import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.checkpoint import load_checkpoint
from training import loop, resume
from training.config import TrainConfig, steepness
from training.ema import WeightAverage
from training.loop import _build, _initialise_cnn, train
from training.loop import augment as augment_batch

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path, data_dir, **overrides):
    values = dict(
        dataset="mnist",
        defense="tq",
        levels=2,
        out=tmp_path / "out",
        data_dir=data_dir,
        epochs=3,
        batch_size=32,
        lr=2e-3,
        seed=7,
        device="cpu",
        progress=False,
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_short_training_run_loss_falls_and_checkpoint_verifies(tmp_path, tiny_mnist):
    metrics = train(_config(tmp_path, tiny_mnist))
    loaded = load_checkpoint(tmp_path / "out")
    history = loaded.manifest.training["history"]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert metrics["clean_accuracy"] > 0.9  # the synthetic classes are easy
    assert loaded.manifest.metrics == metrics
    assert loaded.manifest.quantizer["kind"] == "tq"
    assert loaded.manifest.quantizer["thresholds"] == history[-1]["thresholds"]
    assert [r["steepness"] for r in history] == pytest.approx([10.0, 31.6227766, 100.0])
    assert len(loaded.manifest.data_sha256) == 4
    assert loaded.manifest.training["seed"] == 7
    assert not resume.state_dir(_config(tmp_path, tiny_mnist)).exists()


def test_training_is_deterministic(tmp_path, tiny_mnist):
    train(_config(tmp_path / "a", tiny_mnist, epochs=1))
    train(_config(tmp_path / "b", tiny_mnist, epochs=1))
    a = load_file(str(tmp_path / "a" / "out" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "out" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, tiny_mnist, monkeypatch, ema_decay):
    uninterrupted = _config(tmp_path / "full", tiny_mnist, ema_decay=ema_decay)
    train(uninterrupted)

    interrupted = _config(tmp_path / "cut", tiny_mnist, ema_decay=ema_decay)
    original = resume.save

    def save_then_crash(config, model, optimizer, epochs_done, history, average):
        original(config, model, optimizer, epochs_done, history, average)
        if epochs_done == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(resume, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted)
    assert resume.state_dir(interrupted).exists()
    monkeypatch.setattr(resume, "save", original)
    train(interrupted)

    full = load_file(str(tmp_path / "full" / "out" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "cut" / "out" / "model.safetensors"))
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    manifest = load_checkpoint(tmp_path / "cut" / "out").manifest
    assert len(manifest.training["history"]) == 3
    # The wall time counts the epochs of both sessions, each timed where it ran.
    epoch_seconds = [entry["seconds"] for entry in manifest.training["history"]]
    assert manifest.metrics["train_seconds"] == round(sum(epoch_seconds), 1)
    assert "train_seconds_covers" not in manifest.metrics


def test_a_state_from_before_epochs_were_timed_says_its_time_is_partial():
    from training.loop import _train_seconds

    older = [{"epoch": 1}, {"epoch": 2, "seconds": 4.0}]
    partial = _train_seconds(older, 4.0)
    assert partial["train_seconds"] == 4.0
    assert "after the last resume only" in partial["train_seconds_covers"]
    assert _train_seconds([{"seconds": 1.5}, {"seconds": 2.0}], 2.0) == {"train_seconds": 3.5}


def test_resume_with_different_settings_is_refused(tmp_path, tiny_mnist):
    config = _config(tmp_path, tiny_mnist)
    model_dir = resume.state_dir(config)
    model_dir.mkdir(parents=True)
    (model_dir / "state.json").write_text(json.dumps({"config": {"seed": 1}}))
    with pytest.raises(resume.ResumeError, match="different settings"):
        train(config)


def test_steepness_anneals_geometrically():
    config = TrainConfig(
        "mnist", "tq", Path("o"), Path("d"), epochs=5, steepness_start=1, steepness_end=16
    )
    assert [steepness(config, e) for e in range(5)] == pytest.approx([1, 2, 4, 8, 16])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"defense": "jpeg"}, "defense"),
        ({"epochs": 0}, "epochs"),
        ({"steepness_start": 50, "steepness_end": 10}, "steepness"),
    ],
)
def test_invalid_config_is_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(tmp_path, tmp_path, **overrides)


def _cli(*args, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_reports_missing_data_clearly(tmp_path):
    result = _cli(
        "train",
        "--dataset",
        "mnist",
        "--defense",
        "none",
        "--data-dir",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    )
    assert result.returncode == 2
    assert "train-images-idx3-ubyte" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path, tiny_mnist):
    common = [
        "train",
        "--dataset",
        "mnist",
        "--defense",
        "tq",
        "--data-dir",
        str(tiny_mnist),
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--no-progress",
    ]
    single = _cli(*common, "--out", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    torchrun = Path(sys.executable).with_name("torchrun")
    ddp = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "training",
            *common,
            "--out",
            str(tmp_path / "ddp"),
        ],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr
    manifest = load_checkpoint(tmp_path / "ddp").manifest
    assert manifest.training["world_size"] == 2
    one = load_file(str(tmp_path / "single" / "model.safetensors"))
    two = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    # Same global batches; only the order of floating-point sums differs.
    for key in one:
        assert torch.allclose(one[key], two[key], atol=2e-4), key
    single_acc = load_checkpoint(tmp_path / "single").manifest.metrics["clean_accuracy"]
    assert abs(manifest.metrics["clean_accuracy"] - single_acc) <= 0.01


def test_a_batch_smaller_than_the_processes_is_refused(tmp_path, tiny_mnist):
    """Each of torchrun's processes takes batch_size // world_size rows a step: none at all
    when the batch is smaller than the number of processes."""
    config = _config(tmp_path, tiny_mnist, batch_size=1)
    two = loop.Runtime(torch.device("cpu"), rank=0, world_size=2)
    with pytest.raises(ValueError, match="--batch-size 1 is smaller than the 2 training"):
        loop._check_batches(config, two, images=100)
    loop._check_batches(config, loop.Runtime(torch.device("cpu")), images=100)  # one: fine


def test_cli_describe_prints_a_row_per_checkpoint(tmp_path, tiny_mnist):
    train(_config(tmp_path, tiny_mnist, epochs=1))
    result = _cli("describe", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    row = result.stdout.splitlines()[-1]
    manifest = load_checkpoint(tmp_path / "out").manifest
    assert row.startswith("| out | cleverhans-basic-cnn | 1x28x28 | 10 | tq | 2 |")
    assert f"{100 * manifest.metrics['clean_accuracy']:.2f}%" in row


def test_cifar10_path_trains_with_augmentation_on_generated_batches(tmp_path):
    from .conftest import cifar_batch

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(cifar_batch(64, i))
    (folder / "test_batch").write_bytes(cifar_batch(64, 9))
    config = _config(tmp_path, tmp_path, dataset="cifar10", epochs=2, augment=True, levels=4)
    train(config)
    loaded = load_checkpoint(config.out)
    assert loaded.manifest.input_shape == [3, 32, 32]
    assert loaded.manifest.class_names[0] == "airplane"
    assert len(loaded.manifest.quantizer["thresholds"]) == 3
    history = loaded.manifest.training["history"]
    assert history[-1]["loss"] < history[0]["loss"]


def test_augment_keeps_shape_and_pixels():
    x = torch.rand(8, 3, 32, 32)
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    flipped_or_shifted = out.ne(x).any()
    assert flipped_or_shifted
    # Zero padding may bring in zeros but never new values.
    assert set(out.unique().tolist()) <= set(x.unique().tolist()) | {0.0}


def test_manifest_records_the_revision_the_run_started_at(tmp_path, tiny_mnist, monkeypatch):
    revisions = iter(["abc123-at-start", "def456-at-end"])
    monkeypatch.setattr("training.loop.git_revision", lambda: next(revisions))
    train(_config(tmp_path, tiny_mnist, epochs=1))
    assert load_checkpoint(tmp_path / "out").manifest.git_revision == "abc123-at-start"


def test_init_from_starts_the_cnn_from_a_checkpoint_and_records_it(tmp_path, tiny_mnist):
    base = train(_config(tmp_path, tiny_mnist, defense="none", epochs=1, out=tmp_path / "base"))
    assert base["clean_accuracy"] > 0
    source = load_checkpoint(tmp_path / "base")
    config = _config(tmp_path, tiny_mnist, init_from=tmp_path / "base", epochs=1)
    model = _build(config)
    fresh_thresholds = model.quantizer.thresholds.detach().clone()
    used = _initialise_cnn(config, model)
    for key, value in source.model.cnn.state_dict().items():
        torch.testing.assert_close(model.cnn.state_dict()[key], value, rtol=0, atol=0)
    torch.testing.assert_close(model.quantizer.thresholds.detach(), fresh_thresholds)
    assert used == {
        "folder": str(tmp_path / "base"),
        "weights_sha256": source.manifest.weights_sha256,
    }
    train(config)
    recorded = load_checkpoint(tmp_path / "out").manifest.training
    assert recorded["initialised_from"] == used
    assert recorded["init_from"] == str(tmp_path / "base")


def test_init_from_another_dataset_is_refused(tmp_path, tiny_mnist):
    train(_config(tmp_path, tiny_mnist, defense="none", epochs=1, out=tmp_path / "base"))
    config = _config(tmp_path, tiny_mnist, dataset="cifar10", init_from=tmp_path / "base")
    with pytest.raises(ValueError, match="cannot start a cifar10 run"):
        _initialise_cnn(config, _build(config))


def test_init_from_a_tq_checkpoint_carries_its_thresholds_to_a_tq_run(tmp_path, tiny_mnist):
    train(_config(tmp_path, tiny_mnist, defense="tq", levels=4, epochs=1, out=tmp_path / "b"))
    source = load_checkpoint(tmp_path / "b")
    learned = source.model.quantizer.thresholds.detach()
    config = _config(tmp_path, tiny_mnist, levels=4, init_from=tmp_path / "b", epochs=1)
    model = _build(config)
    assert not torch.allclose(model.quantizer.thresholds.detach(), learned)
    used = _initialise_cnn(config, model)
    torch.testing.assert_close(model.quantizer.thresholds.detach(), learned, rtol=0, atol=0)
    assert used["quantizer_thresholds"] == source.manifest.quantizer["thresholds"]
    # other levels: the quantizer starts fresh
    other = _config(tmp_path, tiny_mnist, levels=3, init_from=tmp_path / "b", epochs=1)
    assert "quantizer_thresholds" not in _initialise_cnn(other, _build(other))


def test_a_run_with_an_average_ships_the_average(tmp_path, tiny_mnist, monkeypatch):
    made = []

    class Recorded(WeightAverage):
        def __init__(self, model, decay):
            super().__init__(model, decay)
            made.append((self, model))

    monkeypatch.setattr(loop, "WeightAverage", Recorded)
    config = _config(tmp_path, tiny_mnist, epochs=2, ema_decay=0.9)
    metrics = train(config)
    ((average, live),) = made
    shipped = load_file(str(tmp_path / "out" / "model.safetensors"))
    for key, value in average.model.state_dict().items():
        torch.testing.assert_close(shipped[key], value, rtol=0, atol=0)
    # ... and not the last weights, which differ from their average
    assert any(not torch.equal(shipped[k], v) for k, v in live.state_dict().items())
    manifest = load_checkpoint(tmp_path / "out").manifest
    assert manifest.training["ema_decay"] == 0.9
    assert manifest.quantizer["thresholds"] == manifest.training["history"][-1]["thresholds"]
    assert manifest.metrics["clean_accuracy"] == metrics["clean_accuracy"] > 0.9
