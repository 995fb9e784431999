"""The shipped CIFAR-10 TQ checkpoint served over real HTTP beside the MNIST one."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from models.checkpoint import load_checkpoint, sha256_file
from models.evalset import eval_set_path, load_eval_set
from tests.service.helpers.admin import AUTH, TOKEN, finished, poll
from tests.service.helpers.images import encode
from tests.service.helpers.servers import STOPPED_BY_SIGTERM, Server, start_server, stop

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MNIST = ROOT / "checkpoints" / "mnist-tq2"
CIFAR10 = sorted((ROOT / "checkpoints").glob("cifar10-tq*/manifest.json"))
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


@pytest.fixture(scope="module")
def cifar10_checkpoint() -> Path:
    if not CIFAR10:  # issue 8: the level sweep chooses L before cifar10-tq<L> ships
        pytest.skip("no cifar10-tq* checkpoint is shipped yet")
    assert len(CIFAR10) == 1, f"expected one shipped cifar10-tq* checkpoint, found {CIFAR10}"
    return CIFAR10[0].parent


@pytest.fixture(scope="module")
def server(cifar10_checkpoint: Path, tmp_path_factory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    environment = {
        "QUSEC_ADMIN_TOKEN": TOKEN,
        "QUSEC_ROBUSTNESS_DB": str(log.parent / "jobs.sqlite3"),
    }
    running = start_server(
        log, ["--checkpoint", str(MNIST), "--checkpoint", str(cifar10_checkpoint)], environment
    )
    yield running
    assert stop(running) in STOPPED_BY_SIGTERM, log.read_text()


def test_first_200_test_images_get_the_checkpoints_own_predictions(server, cifar10_checkpoint):
    subset = load_eval_set(eval_set_path("cifar10", ROOT / "data" / "eval"))
    images = subset.images[:200]
    with torch.no_grad():
        expected = load_checkpoint(cifar10_checkpoint).model(images).argmax(1).tolist()
    pixels = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)  # (N, H, W, C)
    url = f"/classify?model={cifar10_checkpoint.name}"
    with httpx.Client(base_url=server.url, timeout=60) as http:
        answers = [http.post(url, content=encode(Image.fromarray(p), "PNG")) for p in pixels]
    assert [a.status_code for a in answers] == [200] * 200
    assert [a.json()["label"] for a in answers] == expected
    assert [a.json()["class_name"] for a in answers] == [CIFAR10_CLASSES[i] for i in expected]
    # A defended model that classifies real test images: far above chance on these 200.
    accuracy = np.mean(np.array(expected) == subset.labels[:200].numpy())
    assert accuracy >= 0.5, accuracy


def _photo(mode: str, size: tuple[int, int]) -> Image.Image:
    """A smooth synthetic photograph: gradients and a disc, in the given mode and size."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    disc = ((x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(size) / 3) ** 2) * 120
    rgb = np.stack([x / width * 255, y / height * 255, disc + 60], axis=-1)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    if mode == "RGBA":
        image.putalpha(Image.fromarray((x / width * 255).astype(np.uint8)))
    return image.convert(mode)


@pytest.mark.parametrize(
    ("mode", "size", "fmt"),
    [("RGB", (640, 480), "JPEG"), ("RGBA", (300, 200), "PNG"), ("L", (50, 70), "PNG")],
)
def test_photographs_of_any_size_and_mode_are_normalised_and_classified(
    server, cifar10_checkpoint, mode, size, fmt
):
    buffer = io.BytesIO()
    _photo(mode, size).save(buffer, fmt)
    url = f"/classify?model={cifar10_checkpoint.name}&include_quantized=true"
    answer = httpx.post(f"{server.url}{url}", content=buffer.getvalue(), timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["class_name"] == CIFAR10_CLASSES[body["label"]]
    assert sorted(body["probabilities"]) == sorted(CIFAR10_CLASSES)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    quantized = Image.open(io.BytesIO(base64.b64decode(body["quantized_image"]["data"])))
    assert quantized.size == (32, 32)


def test_models_and_metadata_describe_both(server, cifar10_checkpoint):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        models = {m["name"]: m for m in http.get("/models").json()["models"]}
        assert set(models) == {"mnist-tq2", cifar10_checkpoint.name}
        assert models[cifar10_checkpoint.name]["class_names"] == CIFAR10_CLASSES
        meta = http.get(f"/v2/models/{cifar10_checkpoint.name}").json()
        assert meta["inputs"][0]["shape"] == [-1, 3, 32, 32]
        assert http.get("/v2/models/mnist-tq2").json()["inputs"][0]["shape"] == [-1, 1, 28, 28]


def test_a_robustness_check_runs_on_the_cifar10_model_with_the_bundled_subset(
    server, cifar10_checkpoint
):
    request = {"model": cifar10_checkpoint.name, "attacks": ["fgsm", "pgd"], "samples": 10}
    request |= {"threat_models": ["bpda"], "batch_size": 10, "sanity_epsilon": None}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        submitted = http.post("/robustness-check", headers=AUTH, json=request)
        assert submitted.status_code == 202, submitted.text
        job = poll(http, submitted.json()["id"], finished)
    assert job["status"] == "done", job
    report = job["report"]
    assert report["model"]["name"] == cifar10_checkpoint.name
    subset = eval_set_path("cifar10", ROOT / "data" / "eval")
    assert report["eval_set"]["sha256"] == sha256_file(subset)
    # CIFAR-10's radii by default (robustness/presets.py), not MNIST's.
    rows = [r for r in report["results"] if not r["sanity"]]
    assert {round(r["epsilon"] * 255) for r in rows if r["norm"] == "linf"} == {2, 4, 8}
    assert {(r["attack"], r["threat_model"]) for r in rows} >= {("fgsm", "bpda"), ("pgd", "bpda")}
    assert all(r["samples"] == 10 for r in rows)
