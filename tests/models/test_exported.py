"""Exported programs: a network known only to this test, imported with no code, served and
attacked like any other checkpoint."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile

import pytest
import torch
from torch import nn

from models.checkpoint import PROGRAM_FILE, CheckpointError, load_checkpoint
from models.cli import main
from models.quantizers import straight_through

SHAPE = (3, 12, 10)
CLASSES = ["cat", "dog", "fox", "owl"]
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


class TinyNet(nn.Module):
    """Convolution, batch norm, dropout: layers whose eval behaviour the export must keep."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(6, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x))).mean((2, 3))  # (N, 6)
        return self.fc(self.drop(h))


@pytest.fixture(scope="module")
def net() -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet()
    with torch.no_grad():  # batch norm statistics that differ from the initial ones
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def export(net: nn.Module, path, dynamic: bool = True, batch: int = 2):
    example = (torch.rand(batch, *SHAPE),)
    shapes = {"x": {0: torch.export.Dim("batch")}} if dynamic else None
    torch.export.save(torch.export.export(net, example, dynamic_shapes=shapes), str(path))
    return path


@pytest.fixture(scope="module")
def program(net, tmp_path_factory):
    return export(net, tmp_path_factory.mktemp("program") / "net.pt2")


def import_args(program, out, *extra: str) -> list[str]:
    return [
        "import",
        str(program),
        "--out",
        str(out),
        "--input-shape",
        ",".join(map(str, SHAPE)),
        "--class-names",
        ",".join(CLASSES),
        *extra,
    ]


def normalized(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(-1, 1, 1)) / torch.tensor(STD).view(-1, 1, 1)


def test_imported_program_serves_quantizer_then_normalization_then_program(
    net, program, tmp_path
) -> None:
    norm = ["--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD))]
    defence = ["--defence", "cq", "--levels", "4"]
    assert main(import_args(program, tmp_path / "ck", *norm, *defence)) == 0
    loaded = load_checkpoint(tmp_path / "ck")
    manifest = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    assert manifest["format"] == "exported-program"
    assert manifest["normalization"] == {"mean": list(MEAN), "std": list(STD)}
    assert manifest["class_names"] == CLASSES
    model = loaded.model
    assert not model.training and model.quantizer.levels == 4
    for n in (1, 3, 7):  # a dynamic batch: any size the service or an attack feeds
        x = torch.rand(n, *SHAPE)
        expected = net(normalized(torch.round(x * 3) / 3))
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.cnn(model.quantize(x)), expected, rtol=1e-5, atol=1e-5)


def test_input_gradient_flows_through_the_program(program, tmp_path) -> None:
    assert main(import_args(program, tmp_path / "plain")) == 0
    assert main(import_args(program, tmp_path / "tq", "--defence", "tq", "--levels", "2")) == 0
    x = torch.rand(5, *SHAPE, requires_grad=True)
    plain = load_checkpoint(tmp_path / "plain").model
    (grad,) = torch.autograd.grad(plain(x).logsumexp(1).sum(), x)
    assert grad.shape == x.shape and grad.abs().sum() > 0
    defended = load_checkpoint(tmp_path / "tq").model  # BPDA, as the adaptive attacks use it
    logits = defended.cnn(straight_through(x, defended.quantizer))
    (grad,) = torch.autograd.grad(logits.logsumexp(1).sum(), x)
    assert grad.abs().sum() > 0
    with torch.inference_mode():  # the service's predict stage
        assert defended.cnn(torch.rand(2, *SHAPE)).shape == (2, len(CLASSES))


def test_a_static_batch_is_fitted_by_padding_and_chunks(net, tmp_path) -> None:
    static = export(net, tmp_path / "static.pt2", dynamic=False, batch=4)
    assert main(import_args(static, tmp_path / "ck")) == 0
    model = load_checkpoint(tmp_path / "ck").model
    assert (model.network.min_batch, model.network.max_batch) == (4, 4)
    for n in (1, 4, 9):
        x = torch.rand(n, *SHAPE, requires_grad=True)
        logits = model(x)
        torch.testing.assert_close(logits, net(x), rtol=1e-5, atol=1e-5)
        (grad,) = torch.autograd.grad(logits[:, 0].sum(), x)
        (expected,) = torch.autograd.grad(net(x)[:, 0].sum(), x)
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)


def test_the_command_line_entry_point(program, tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "models", *import_args(program, tmp_path / "ck")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (
        json.loads(done.stdout)["program_sha256"]
        == load_checkpoint(tmp_path / "ck").manifest.weights_sha256
    )


def _pickled_payload(program, tmp_path):
    """The program with its weights marked as pickles (what torch.export.load unpickles)."""
    bad = tmp_path / "pickled.pt2"
    with zipfile.ZipFile(program) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                next(iter(config["config"].values()))["use_pickle"] = True
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    return bad


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no such file"),
        ("text", "not an exported program"),
        ("torch_save", "not an exported program"),
        ("pickled", "pickled object"),
        ("shape", "fails on a zero batch of shape"),
        ("classes", r"not \[1, 3\] logits"),
        ("mean_length", "--mean has 2 values for 3 channels"),
        ("std_zero", "--std must be positive"),
        ("std_alone", "--mean and --std go together"),
        ("channels", "4 channels"),
        ("duplicate_class", "distinct"),
        ("thresholds", "thresholds"),
    ],
)
def test_bad_imports_are_refused_with_a_reason(program, tmp_path, caplog, case, message) -> None:
    text = tmp_path / "notes.pt2"
    text.write_text("not a program")
    saved = tmp_path / "saved.pt2"
    torch.save({"weights": torch.zeros(2)}, saved)
    out = tmp_path / "ck"
    args = {
        "missing": import_args(tmp_path / "absent.pt2", out),
        "text": import_args(text, out),
        "torch_save": import_args(saved, out),
        "pickled": import_args(_pickled_payload(program, tmp_path), out),
        "shape": [*import_args(program, out)[:5], "3,13,10", *import_args(program, out)[6:]],
        "classes": [*import_args(program, out)[:7], "a,b,c"],
        "mean_length": import_args(program, out, "--mean", "0.5,0.5", "--std", "1,1"),
        "std_zero": import_args(program, out, "--mean", "0,0,0", "--std", "1,0,1"),
        "std_alone": import_args(program, out, "--std", "1,1,1"),
        "channels": [*import_args(program, out)[:5], "4,12,10", *import_args(program, out)[6:]],
        "duplicate_class": [*import_args(program, out)[:7], "a,b,a,c"],
        "thresholds": import_args(program, out, "--defence", "cq", "--thresholds", "0.7,0.2"),
    }[case]
    assert main(args) == 2
    assert re.search(message, caplog.text)
    assert not out.exists()


def test_a_modified_program_is_refused_at_load(program, tmp_path) -> None:
    assert main(import_args(program, tmp_path / "ck")) == 0
    with open(tmp_path / "ck" / PROGRAM_FILE, "ab") as f:
        f.write(b"\0")
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path / "ck")
