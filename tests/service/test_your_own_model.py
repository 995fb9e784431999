"""Your own model, end to end, as a user brings it: a network that only this test defines
(3x40x48 input, 7 classes), trained here for a few seconds, exported with ``torch.export``,
imported with ``python -m models import`` (once behind CQ, once undefended as the transfer
surrogate, with a labelled folder as its evaluation set), served by a real ``python -m
service`` process over HTTP, classified through ``/classify`` and ``/v2``, checked by the
admin robustness endpoint with every threat model split into parts, and its report
rendered; then the same checkpoint through ``robustness evaluate``."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tests.service.helpers.admin import AUTH, TOKEN, finished, poll
from tests.service.helpers.servers import ROOT, STOPPED_BY_SIGTERM, start_server, stop

pytestmark = pytest.mark.slow

SHAPE = (3, 40, 48)
CLASSES = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu"]
MEAN, STD = (0.2, 0.2, 0.2), (0.3, 0.3, 0.3)
GENERIC_EPSILONS = [2 / 255, 4 / 255, 8 / 255]


class BandNet(nn.Module):
    """Two strided convolutions and a dense layer; none of QuSec's code knows it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 * 10 * 12, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))  # (N, 16, 10, 12)
        return self.fc(h.flatten(1))


def bands(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 3, 40, 48) uint8: dark noise with a bright band whose row is the class."""
    images = rng.integers(0, 60, (len(labels), *SHAPE), dtype=np.uint8)
    for image, label in zip(images, labels, strict=True):
        image[:, 2 + 5 * label : 6 + 5 * label, 4:44] = 230
    return images


def png(image: np.ndarray, scale: int = 1) -> bytes:
    """(3, H, W) uint8 -> PNG of (H * scale, W * scale): the service letterboxes it back."""
    pixels = image.transpose(1, 2, 0).repeat(scale, 0).repeat(scale, 1)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def train_and_export(path: Path) -> BandNet:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, len(CLASSES), 512)
    x = torch.from_numpy(bands(labels, rng)).float() / 255
    x = (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    y = torch.from_numpy(labels)
    net = BandNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for step in range(60):
        batch = slice(64 * (step % 8), 64 * (step % 8 + 1))
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
        optimizer.step()
    net.eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (x[:2],), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(path))
    return net


def python(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict:
    """The program imported twice into checkpoints/: pets-cq4 and its surrogate."""
    work = tmp_path_factory.mktemp("own-model")
    program = work / "bandnet.pt2"
    train_and_export(program)
    rng = np.random.default_rng(1)
    eval_labels = np.repeat(np.arange(len(CLASSES)), 4)
    eval_images = bands(eval_labels, rng)
    folder = work / "eval"
    for index, (image, label) in enumerate(zip(eval_images, eval_labels, strict=True)):
        (folder / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        # Twice the model's size in the folder: the import fits it as the service would.
        (folder / CLASSES[label] / f"{index}.png").write_bytes(png(image, scale=2))
    checkpoints = work / "checkpoints"
    common = [
        "-m", "models", "import", str(program), "--input-shape", "3,40,48",
        "--class-names", ",".join(CLASSES), "--mean", "0.2,0.2,0.2", "--std", "0.3,0.3,0.3",
        "--dataset", "pets", "--eval-folder", str(folder),
    ]  # fmt: skip
    for name, defence in (
        ("pets-cq4", ["--defence", "cq", "--levels", "4"]),
        ("pets-undefended", []),
    ):
        result = python(*common, "--out", str(checkpoints / name), *defence)
        assert result.returncode == 0, result.stderr
    return {
        "checkpoint": checkpoints / "pets-cq4",
        "surrogate": checkpoints / "pets-undefended",
        "images": eval_images,
        "labels": eval_labels,
        "work": work,
    }


def test_an_imported_model_is_served_classified_and_checked_over_http(imported, tmp_path):
    env = {
        "QUSEC_ADMIN_TOKEN": TOKEN,
        "QUSEC_ROBUSTNESS_DB": str(tmp_path / "jobs.sqlite3"),
        "QUSEC_ROBUSTNESS_SPLIT_UNITS": "true",
        "QUSEC_LOG_FORMAT": "json",
    }
    server = start_server(
        tmp_path / "server.log", ["--checkpoint", str(imported["checkpoint"])], env
    )
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            _classify(http, imported)
            _open_inference(http, imported)
            job = _robustness_check(http)
    finally:
        assert stop(server) in STOPPED_BY_SIGTERM, server.log.read_text()[-4000:]
    _render(job["report"], tmp_path)


def _classify(http: httpx.Client, imported: dict) -> None:
    model = http.get("/models").json()["models"][0]
    assert model["name"] == "pets-cq4"
    assert model["input_shape"] == list(SHAPE)
    assert model["architecture"] == "exported-program"
    for image, label in zip(imported["images"][::4], imported["labels"][::4], strict=True):
        # 96x80 and 144x120 uploads: letterboxed down to the model's 48x40.
        for scale in (2, 3):
            answer = http.post(
                "/classify?include_input=true",
                content=png(image, scale),
                headers={"Content-Type": "image/png"},
            )
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["class_name"] == CLASSES[label]
            assert len(body["probabilities"]) == len(CLASSES)
            seen = Image.open(io.BytesIO(base64.b64decode(body["input_image"]["data"])))
            assert seen.size == (48, 40)


def _open_inference(http: httpx.Client, imported: dict) -> None:
    meta = http.get("/v2/models/pets-cq4").json()
    assert meta["inputs"][0]["shape"] == [-1, *SHAPE]
    assert {o["name"]: o["shape"] for o in meta["outputs"]}["probabilities"] == [-1, 7]
    # Four decimals keep three images' JSON under the tests' body limit.
    rows = np.round(imported["images"][:3] / 255.0, 4)
    body = {"inputs": [{"name": "input", "shape": [3, *SHAPE], "datatype": "FP32",
                        "data": rows.flatten().tolist()}]}  # fmt: skip
    answer = http.post("/v2/models/pets-cq4/infer", json=body)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["probabilities"]["shape"] == [3, 7]
    assert outputs["label"]["data"] == imported["labels"][:3].tolist()


def _robustness_check(http: httpx.Client) -> dict:
    defaults = http.post("/robustness-check", headers=AUTH, json={"sanity_epsilon": None})
    assert defaults.status_code == 202, defaults.text
    # Defaults for a dataset QuSec has no preset for: the generic radii, every threat
    # model that applies (transfer through the surrogate beside the checkpoint), and the
    # evaluation set the import wrote into the checkpoint.
    planned = defaults.json()
    assert planned["request"]["epsilons"] == pytest.approx(GENERIC_EPSILONS)
    assert planned["request"]["threat_models"] == ["transfer", "naive", "bpda", "gradient_free"]
    assert planned["samples"] == "eval-set.npz" and planned["request"]["samples"] == 28
    http.delete(f"/robustness-check/{planned['id']}", headers=AUTH)
    poll(http, planned["id"], finished)
    # One radius: four units (FGSM under three threat models, noise), one part each.
    request = {"attacks": ["noise", "fgsm"], "epsilons": [8 / 255], "samples": 14,
               "batch_size": 7, "sanity_epsilon": None}  # fmt: skip
    submitted = http.post("/robustness-check", headers=AUTH, json=request)
    assert submitted.status_code == 202, submitted.text
    job = poll(http, submitted.json()["id"], finished, timeout=600)
    assert job["status"] == "done", job.get("error")
    assert job["parts"] == 4, "the check ran split into parts (QUSEC_ROBUSTNESS_SPLIT_UNITS)"
    report = job["report"]
    threat_models = {row["threat_model"] for row in report["results"]}
    assert threat_models == {"transfer", "naive", "bpda", "gradient_free"}
    assert {row["samples"] for row in report["results"]} == {14}
    return job


def _render(report: dict, folder: Path) -> None:
    from robustness.html import write_html
    from robustness.render import write_report

    written = write_report(report, folder / "report", "pets-cq4")
    page = write_html(report, folder / "report" / "pets-cq4.html").read_text()
    assert all(path.is_file() for path in written)
    assert "pets-cq4" in page and "transfer" in page
    assert report["examples"], "the report carries adversarial examples"


def test_robustness_evaluate_runs_on_the_imported_checkpoint(imported, tmp_path):
    from robustness.cli import main

    out = tmp_path / "report"
    args = [
        "evaluate", "--checkpoint", str(imported["checkpoint"]), "--attacks", "fgsm",
        "--samples", "14", "--sanity-epsilon", "none", "--out", str(out), "--html",
    ]  # fmt: skip
    assert main(args) == 0
    report = json.loads((out / "pets-cq4.json").read_text())
    assert {r["threat_model"] for r in report["results"]} == {"transfer", "naive", "bpda"}
    assert sorted({r["epsilon"] for r in report["results"]}) == pytest.approx(GENERIC_EPSILONS)
    # The same, on the labelled folder itself instead of the checkpoint's eval-set.npz.
    folder_args = [*args, "--eval-set", str(imported["work"] / "eval"), "--stem", "folder"]
    assert main(folder_args) == 0
    folder_report = json.loads((out / "folder.json").read_text())
    assert folder_report["eval_set"]["sha256"] != report["eval_set"]["sha256"]
    # The same images, fitted the same way: the same clean accuracy.
    assert folder_report["clean_accuracy"] == report["clean_accuracy"] == 1.0


PACKAGE_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "qusec-stripes"
version = "0.1.0"

[project.entry-points."qusec.architectures"]
stripe-net = "qusec_stripes:build"
"""
PACKAGE_MODULE = """\
from torch import nn


def build(input_shape, num_classes, hidden=8):
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Flatten(), nn.Linear(channels * height * width, hidden), nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )
"""


def test_a_pip_installed_architecture_trains_on_a_folder_and_is_served(tmp_path) -> None:
    """A package made here, installed by pip (offline, into a folder on PYTHONPATH), adds
    an architecture through the entry-point group; training on an image folder and the
    service find it by name, with no edit to QuSec."""
    package = tmp_path / "qusec-stripes"
    (package / "qusec_stripes").mkdir(parents=True)
    (package / "pyproject.toml").write_text(PACKAGE_PYPROJECT)
    (package / "qusec_stripes" / "__init__.py").write_text(PACKAGE_MODULE)
    site = tmp_path / "site"
    installed = python(
        "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
        "--target", str(site), str(package),
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    env = {"PYTHONPATH": str(site)}
    listed = python("-m", "models", "architectures", env=env)
    assert "stripe-net" in listed.stdout.split(), listed.stderr

    rng = np.random.default_rng(2)
    for part, count in (("train", 24), ("test", 6)):
        labels = np.arange(count) % 3
        for index, (image, label) in enumerate(zip(bands(labels, rng), labels, strict=True)):
            folder = tmp_path / "stripes" / part / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{index}.png").write_bytes(png(image))
    out = tmp_path / "checkpoints" / "stripes-cq2"
    trained = python(
        "-m", "training", "train", "--dataset", "imagefolder",
        "--data-dir", str(tmp_path / "stripes"), "--architecture", "stripe-net",
        "--architecture-arg", "hidden=12", "--defense", "cq", "--levels", "2",
        "--epochs", "1", "--batch-size", "8", "--no-progress", "--device", "cpu",
        "--out", str(out),
        env=env,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["architecture"] == "stripe-net"
    assert manifest["architecture_args"] == {"hidden": 12}
    assert (out / "eval-set.npz").is_file(), "training on a folder keeps an evaluation set"

    server = start_server(tmp_path / "server.log", ["--checkpoint", str(out)], env)
    try:
        answer = httpx.post(
            f"{server.url}/classify",
            content=png(bands(np.array([1]), rng)[0], scale=2),
            headers={"Content-Type": "image/png"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["class_name"] in CLASSES[:3]
        assert answer.json()["model"]["name"] == "stripes-cq2"
    finally:
        assert stop(server) in STOPPED_BY_SIGTERM
