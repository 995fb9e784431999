"""The Open Inference Protocol endpoints: health, metadata, infer, and tensor validation."""

from __future__ import annotations

import json

import pytest
import torch

from models.checkpoint import load_checkpoint
from tests.service.helpers.images import TEST_BODY_LIMIT


def infer_body(data, shape, datatype="FP32", name="input", **extra) -> dict:
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}], **extra}


def rows(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_server_and_model_health(client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2/models/mnist-tq2/ready").json() == {"name": "mnist-tq2", "ready": True}
    assert client.get("/v2").json()["name"] == "qusec"


def test_model_metadata(client) -> None:
    meta = client.get("/v2/models/mnist-tq2").json()
    assert meta["name"] == "mnist-tq2"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert {o["name"] for o in meta["outputs"]} == {"probabilities", "label"}
    assert client.get("/v2/models/nope").status_code == 404


def test_infer_matches_a_direct_forward(client, checkpoints) -> None:
    x = rows(5)
    body = infer_body(x.flatten().tolist(), [5, 1, 28, 28], id="abc")
    response = client.post("/v2/models/mnist-tq2/infer", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == "mnist-tq2" and answer["id"] == "abc"
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["probabilities"]["shape"] == [5, 10]
    served = torch.tensor(outputs["probabilities"]["data"]).reshape(5, 10)
    model = load_checkpoint(checkpoints["mnist-tq2"]).model
    with torch.inference_mode():
        direct = torch.softmax(model(x), dim=1)
    torch.testing.assert_close(served, direct, rtol=0, atol=1e-6)
    assert outputs["label"]["data"] == torch.argmax(direct, dim=1).tolist()


def test_nested_data_and_requested_outputs(client) -> None:
    body = infer_body(rows(2).tolist(), [2, 1, 28, 28], outputs=[{"name": "label"}])
    answer = client.post("/v2/models/mnist-undefended/infer", json=body).json()
    assert [o["name"] for o in answer["outputs"]] == ["label"]
    assert answer["outputs"][0]["datatype"] == "INT64"


FLAT = rows(1).flatten().tolist()


def with_value(value) -> list:
    return [value, *FLAT[1:]]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (infer_body(FLAT, [1, 28, 28]), "invalid_tensor"),  # no batch axis
        (infer_body(FLAT, [1, 1, 28, 27]), "invalid_tensor"),
        (infer_body(FLAT * 2, [1, 1, 28, 28]), "invalid_tensor"),  # too many values
        (infer_body(FLAT[:-1], [1, 1, 28, 28]), "invalid_tensor"),
        (infer_body(FLAT, [1, 1, 28, 28], datatype="INT32"), "invalid_tensor"),
        (infer_body(FLAT, [1, 1, 28, 28], datatype="FP64"), "invalid_tensor"),
        (infer_body(with_value(1.5), [1, 1, 28, 28]), "invalid_tensor"),
        (infer_body(with_value(-0.01), [1, 1, 28, 28]), "invalid_tensor"),
        (infer_body(with_value("0.5"), [1, 1, 28, 28]), "invalid_tensor"),
        (infer_body(with_value(True), [1, 1, 28, 28]), "invalid_tensor"),
        (infer_body(with_value(None), [1, 1, 28, 28]), "invalid_tensor"),
        (infer_body(with_value(10**400), [1, 1, 28, 28]), "invalid_tensor"),
        (infer_body([[0.5] * 784, [0.5]], [2, 1, 28, 28]), "invalid_tensor"),  # ragged
        (infer_body({"a": 1}, [1, 1, 28, 28]), "invalid_tensor"),
        (infer_body(FLAT, [0, 1, 28, 28]), "invalid_tensor"),
        (infer_body(FLAT, [1, 1, 28, 28], name="pixels"), "invalid_request"),
        (infer_body(FLAT, [1, 1, 28, 28], outputs=[{"name": "logits"}]), "invalid_request"),
        (infer_body(FLAT, ["1", 1, 28, 28]), "invalid_request"),
        ({"inputs": []}, "invalid_request"),
        ({"outputs": []}, "invalid_request"),
        ([1, 2, 3], "invalid_request"),
    ],
)
def test_invalid_tensors_are_422(client, body, reason) -> None:
    response = client.post("/v2/models/mnist-tq2/infer", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["reason"] == reason
    assert "Traceback" not in response.text


def test_batches_over_the_row_limit_are_422(serve) -> None:
    client = serve(max_infer_rows=2)
    response = client.post("/v2/models/mnist-tq2/infer", json=infer_body(FLAT * 3, [3, 1, 28, 28]))
    assert response.status_code == 422
    assert response.json()["reason"] == "invalid_tensor"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_values_are_422(client, literal) -> None:
    text = json.dumps(infer_body(FLAT, [1, 1, 28, 28])).replace(str(FLAT[0]), literal, 1)
    response = client.post(
        "/v2/models/mnist-tq2/infer", content=text, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["reason"] == "invalid_tensor"


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000],
    ids=["empty", "open", "binary", "deep"],
)
def test_unparsable_json_is_400(client, content) -> None:
    response = client.post("/v2/models/mnist-tq2/infer", content=content)
    assert response.status_code == 400
    assert response.json()["reason"] == "invalid_json"


def test_moderately_deep_nesting_is_422(client) -> None:
    deep = "[" * 500 + "0.5" + "]" * 500
    text = '{"inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"FP32","data":' + deep + "}]}"
    response = client.post("/v2/models/mnist-tq2/infer", content=text)
    assert response.status_code == 422


def test_oversized_infer_body_is_413(client) -> None:
    response = client.post("/v2/models/mnist-tq2/infer", content=b"[" + b"0," * TEST_BODY_LIMIT)
    assert response.status_code == 413
    assert response.json()["reason"] == "body_too_large"


def test_infer_on_unknown_model_is_404(client) -> None:
    response = client.post("/v2/models/nope/infer", json=infer_body(FLAT, [1, 1, 28, 28]))
    assert response.status_code == 404
    assert "error" in response.json()  # the protocol's error field


def test_versioned_routes_answer_for_the_advertised_version_only(client) -> None:
    version = client.get("/v2/models/mnist-tq2").json()["versions"][0]
    base = f"/v2/models/mnist-tq2/versions/{version}"
    assert client.get(base).json()["versions"] == [version]
    assert client.get(f"{base}/ready").json() == {"name": "mnist-tq2", "ready": True}
    body = infer_body(rows(1).flatten().tolist(), [1, 1, 28, 28])
    answer = client.post(f"{base}/infer", json=body)
    assert answer.status_code == 200 and answer.json()["model_version"] == version
    for path in ("/v2/models/mnist-tq2/versions/0", "/v2/models/mnist-tq2/versions/0/ready"):
        assert client.get(path).status_code == 404
    assert client.post("/v2/models/mnist-tq2/versions/0/infer", json=body).status_code == 404


def binary_request(x: torch.Tensor, **parameters) -> tuple[bytes, dict[str, str]]:
    raw = x.numpy().astype("<f4").tobytes()
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32"}
    tensor["parameters"] = {"binary_data_size": len(raw), **parameters}
    header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}})
    return header.encode() + raw, {"Inference-Header-Content-Length": str(len(header))}


def test_binary_tensors_in_and_out(client) -> None:
    x = rows(2)
    body, headers = binary_request(x)
    answer = client.post("/v2/models/mnist-tq2/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    length = int(answer.headers["Inference-Header-Content-Length"])
    reply = json.loads(answer.content[:length])
    outputs = {o["name"]: o for o in reply["outputs"]}
    assert outputs["probabilities"]["parameters"] == {"binary_data_size": 2 * 10 * 4}
    probabilities = torch.frombuffer(
        bytearray(answer.content[length : length + 80]), dtype=torch.float32
    )
    as_json = client.post(
        "/v2/models/mnist-tq2/infer", json=infer_body(x.flatten().tolist(), [2, 1, 28, 28])
    ).json()
    expected = {o["name"]: o for o in as_json["outputs"]}["probabilities"]["data"]
    assert probabilities.tolist() == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"Inference-Header-Content-Length": "5"}, None),  # cuts the JSON: not JSON
        ({"Inference-Header-Content-Length": "999999"}, "between 1 and the body"),
    ],
)
def test_binary_framing_errors_are_refused(client, change, message) -> None:
    body, headers = binary_request(rows(1))
    answer = client.post("/v2/models/mnist-tq2/infer", content=body, headers={**headers, **change})
    assert answer.status_code in (400, 422)
    if message:
        assert message in answer.json()["error"]


def test_a_binary_size_that_disagrees_with_the_shape_is_refused(client) -> None:
    x = rows(1)
    body, headers = binary_request(x)
    answer = client.post(
        "/v2/models/mnist-tq2/infer", content=body[:-4], headers=headers
    )  # one float short
    assert answer.status_code == 422
    assert "bytes of binary data" in answer.json()["error"]


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_compressed_bodies_are_inflated(client, coding) -> None:
    import gzip
    import zlib

    body = json.dumps(infer_body(rows(1).flatten().tolist(), [1, 1, 28, 28])).encode()
    packed = gzip.compress(body) if coding == "gzip" else zlib.compress(body)
    answer = client.post(
        "/v2/models/mnist-tq2/infer", content=packed, headers={"Content-Encoding": coding}
    )
    assert answer.status_code == 200, answer.text


def test_compressed_bodies_are_refused_accurately(client) -> None:
    import gzip

    url = "/v2/models/mnist-tq2/infer"
    bomb = gzip.compress(b" " * (TEST_BODY_LIMIT + 1))  # small, but inflates past the limit
    answer = client.post(url, content=bomb, headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 413 and answer.json()["reason"] == "body_too_large"
    answer = client.post(url, content=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 400 and answer.json()["reason"] == "bad_content_encoding"
    answer = client.post(url, content=b"{}", headers={"Content-Encoding": "br"})
    assert answer.status_code == 415
    assert answer.json()["reason"] == "unsupported_content_encoding"
