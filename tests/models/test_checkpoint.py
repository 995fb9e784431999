import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from models.checkpoint import (
    MANIFEST_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    Manifest,
    load_checkpoint,
    save_checkpoint,
)
from models.registry import build_model


def _manifest(quantizer_kind="tq"):
    return Manifest(
        architecture="cleverhans-basic-cnn",
        dataset="mnist",
        input_shape=[1, 28, 28],
        class_names=[str(d) for d in range(10)],
        quantizer={"kind": quantizer_kind},
        metrics={"clean_accuracy": 0.5},
    )


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model("cleverhans-basic-cnn", (1, 28, 28), 10, {"kind": "tq", "levels": 3})
    with torch.no_grad():
        model.quantizer.gap_logits.copy_(torch.tensor([0.3, -0.2, 0.5]))
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, model.eval(), _manifest())
    return folder, model


def test_round_trip_restores_weights_outputs_and_thresholds(saved):
    folder, model = saved
    loaded = load_checkpoint(folder)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(loaded.model(x), model(x))
    assert not loaded.model.training
    assert loaded.manifest.quantizer["thresholds"] == pytest.approx(
        model.quantizer.thresholds.tolist(), abs=1e-7
    )
    assert loaded.manifest.name == "ckpt"
    assert len(loaded.manifest.weights_sha256) == 64


def test_manifest_is_json_and_weights_are_not_pickle(saved):
    folder, _ = saved
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest["schema_version"] == 1
    assert manifest["quantizer"]["kind"] == "tq"
    assert not (folder / WEIGHTS_FILE).read_bytes().startswith(b"\x80")  # pickle protocol marker


def test_tampered_weights_are_refused(saved):
    folder, _ = saved
    state = load_file(str(folder / WEIGHTS_FILE))
    state["cnn.fc.bias"] += 1.0
    save_file(state, str(folder / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match="sha256 .* does not match"):
        load_checkpoint(folder)


def test_truncated_weights_are_refused(saved):
    folder, _ = saved
    raw = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(folder)


def _rewrite(folder, state=None, **manifest_changes):
    from models.checkpoint import sha256_file

    if state is not None:
        save_file(state, str(folder / WEIGHTS_FILE))
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest.update(manifest_changes)
    manifest["weights_sha256"] = sha256_file(folder / WEIGHTS_FILE)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_missing_and_unexpected_keys_are_listed(saved):
    folder, _ = saved
    state = load_file(str(folder / WEIGHTS_FILE))
    state["extra.weight"] = state.pop("cnn.fc.bias")
    _rewrite(folder, state)
    with pytest.raises(CheckpointError, match=r"missing keys: \['cnn.fc.bias'\].*unexpected keys"):
        load_checkpoint(folder)


def test_manifest_that_disagrees_with_weights_is_refused(saved):
    folder, _ = saved
    _rewrite(folder, input_shape=[3, 32, 32], dataset="cifar10")
    with pytest.raises(CheckpointError, match="tensor shapes disagree"):
        load_checkpoint(folder)


def test_thresholds_in_manifest_must_match_weights(saved):
    folder, _ = saved
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    _rewrite(folder, quantizer={**manifest["quantizer"], "thresholds": [0.1, 0.2]})
    with pytest.raises(CheckpointError, match="thresholds"):
        load_checkpoint(folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema_version": 99}, "schema_version 99 is not supported"),
        ({"architecture": "vgg"}, "field architecture: 'vgg' is unknown; valid"),
        ({"surprise": 1}, "field surprise: Extra inputs are not permitted"),
        ({"input_shape": [28, 28]}, "field input_shape: List should have at least 3 items"),
    ],
)
def test_malformed_manifests_are_refused(saved, change, message):
    folder, _ = saved
    _rewrite(folder, **change)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(folder)


def test_missing_files_and_bad_json_are_refused(saved, tmp_path):
    folder, _ = saved
    with pytest.raises(CheckpointError, match="manifest not found"):
        load_checkpoint(tmp_path / "nowhere")
    (folder / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(folder)


def test_overwrite_is_atomic_and_leaves_no_staging(saved):
    folder, model = saved
    save_checkpoint(folder, model, _manifest())
    assert load_checkpoint(folder).manifest.weights_sha256
    assert sorted(p.name for p in folder.parent.iterdir()) == ["ckpt"]


def test_undefended_round_trip(tmp_path):
    model = build_model("cleverhans-basic-cnn", (3, 32, 32), 10).eval()
    save_checkpoint(tmp_path / "plain", model, _plain_manifest())
    loaded = load_checkpoint(tmp_path / "plain")
    assert loaded.model.quantizer is None
    assert loaded.manifest.quantizer == {"kind": "none"}


def _plain_manifest():
    manifest = _manifest("none")
    manifest.input_shape = [3, 32, 32]
    manifest.dataset = "cifar10"
    return manifest
