"""The Open Inference Protocol as the official client (tritonclient's HTTP client) uses it,
against ``python -m service`` on a loopback port: health, metadata, versions, binary
tensors and compressed bodies; and what the service does at startup with no checkpoint
named or a malformed manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton

from models.checkpoint import load_checkpoint
from tests.service.helpers.servers import ROOT, Server, start_server, stop

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("oip") / "server.log"
    running = start_server(log, ["--checkpoint", str(checkpoints["mnist-tq2"])])
    yield running
    stop(running)


@pytest.fixture(scope="module")
def client(server) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(f"127.0.0.1:{server.port}", network_timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def version(client) -> str:
    return client.get_model_metadata("mnist-tq2")["versions"][0]


def direct(checkpoints, x: np.ndarray) -> torch.Tensor:
    model = load_checkpoint(checkpoints["mnist-tq2"]).model
    with torch.inference_mode():
        return torch.softmax(model(torch.from_numpy(x)), dim=1)


def rows(n: int) -> np.ndarray:
    return np.random.default_rng(0).random((n, 1, 28, 28), dtype=np.float32)


def test_health_and_metadata(client, version) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mnist-tq2")
    assert client.is_model_ready("mnist-tq2", version)
    assert not client.is_model_ready("mnist-tq2", "not-a-version")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata("mnist-tq2", version)
    assert metadata["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("compression", [None, "gzip", "deflate"])
def test_infer_as_the_official_client_sends_it(
    client, checkpoints, version, binary, compression
) -> None:
    x = rows(3)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput("probabilities", binary_data=binary),
        triton.InferRequestedOutput("label", binary_data=binary),
    ]
    result = client.infer(
        "mnist-tq2",
        [tensor],
        model_version=version if binary else "",
        outputs=outputs,
        request_compression_algorithm=compression,
    )
    expected = direct(checkpoints, x)
    served = torch.tensor(result.as_numpy("probabilities"))
    torch.testing.assert_close(served, expected, rtol=0, atol=1e-6)
    assert result.as_numpy("label").tolist() == torch.argmax(expected, dim=1).tolist()


def test_the_client_default_asks_every_output_in_binary(client, checkpoints) -> None:
    x = rows(2)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("mnist-tq2", [tensor])  # no outputs named: binary_data_output
    parameters = {o["name"]: o.get("parameters", {}) for o in result.get_response()["outputs"]}
    assert parameters["probabilities"]["binary_data_size"] == 2 * 10 * 4
    assert parameters["label"]["binary_data_size"] == 2 * 8
    expected = direct(checkpoints, x)
    torch.testing.assert_close(
        torch.tensor(result.as_numpy("probabilities")), expected, rtol=0, atol=1e-6
    )


def test_an_unknown_version_is_refused_by_name(server, version) -> None:
    answer = httpx.post(
        f"{server.url}/v2/models/mnist-tq2/versions/other/infer", json={"inputs": []}, timeout=60
    )
    assert answer.status_code == 404
    assert version in answer.json()["error"]


def test_with_no_checkpoint_named_the_bundled_models_are_served(tmp_path) -> None:
    running = start_server(tmp_path / "bundled.log", [])
    try:
        ready = httpx.get(f"{running.url}/readyz", timeout=60).json()
        assert ready["models"] == [
            "mnist-pgd",
            "cifar10-resnet20-fgsm",
            "cifar10-resnet20",
            "mnist-tq2",
            "cifar10-tq4",
        ]
    finally:
        stop(running)


def test_a_malformed_manifest_stops_startup_with_exit_code_3(checkpoints, tmp_path) -> None:
    folder = tmp_path / "mnist-tq2"
    folder.mkdir()
    manifest = json.loads((checkpoints["mnist-tq2"] / "manifest.json").read_text())
    manifest["quantizer"]["levels"] = "2"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    run = subprocess.run(
        [sys.executable, "-m", "service", "--checkpoint", str(folder), "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 3
    assert str(folder / "manifest.json") in run.stderr
    assert "field quantizer.levels" in run.stderr
