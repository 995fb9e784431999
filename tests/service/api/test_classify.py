"""POST /classify in process: both upload styles, the response, model choice, the corpus."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from models.checkpoint import load_checkpoint
from service.sanitize.imaging import ImagePolicy, decode_image
from tests.service.helpers.images import all_cases, digit, encode
from tests.service.sanitize.test_plain_png import _short_stream

PNG = encode(digit(), "PNG")


def test_raw_body_and_multipart_give_the_same_answer(client) -> None:
    raw = client.post("/classify", content=PNG, headers={"Content-Type": "image/png"})
    form = client.post("/classify", files={"file": ("digit.png", PNG, "image/png")})
    assert raw.status_code == form.status_code == 200
    assert raw.json()["probabilities"] == form.json()["probabilities"]


def test_a_corrupt_small_image_among_good_ones_fails_alone(client) -> None:
    # Small images are decoded as their batch is formed (``MicroBatcher``'s deferred rows):
    # one that passes the header checks but cannot be decoded is refused on its own.
    corrupt = _short_stream(10)
    expected = client.post("/classify", content=PNG, headers={"Content-Type": "image/png"})

    def send(body: bytes):
        return client.post("/classify", content=body, headers={"Content-Type": "image/png"})

    bodies = [PNG] * 3 + [corrupt] + [PNG] * 3
    with ThreadPoolExecutor(len(bodies)) as threads:
        answers = list(threads.map(send, bodies))
    assert [a.status_code for a in answers] == [200] * 3 + [400] + [200] * 3
    assert answers[3].json()["reason"] == "corrupt_image"
    for answer in answers[:3] + answers[4:]:
        assert answer.json()["probabilities"] == expected.json()["probabilities"]


def test_response_describes_prediction_model_defence_and_timings(client, checkpoints) -> None:
    body = client.post("/classify", content=PNG).json()
    manifest = load_checkpoint(checkpoints["mnist-tq2"]).manifest
    assert body["model"] == {
        "name": "mnist-tq2",
        "dataset": "mnist",
        "weights_sha256": manifest.weights_sha256,
    }
    assert body["defence"] == {"kind": "tq", "levels": 2, "thresholds": pytest.approx([0.4])}
    assert set(body["probabilities"]) == {str(d) for d in range(10)}
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["class_name"] == str(body["label"])
    assert body["label"] == max(range(10), key=lambda d: body["probabilities"][str(d)])
    assert set(body["timings_seconds"]) == {
        "read", "decode", "quantize", "queue_wait", "inference", "encode", "total",
    }  # fmt: skip
    assert body["input"]["format"] == "PNG" and body["input"]["via"] == "raw"
    assert body["request_id"]


def test_declared_type_is_reported_not_trusted(client) -> None:
    jpeg = encode(digit(mode="RGB"), "JPEG")
    body = client.post("/classify", files={"file": ("x.png", jpeg, "image/png")}).json()
    assert body["input"]["format"] == "JPEG"
    assert body["input"]["declared_type"] == "image/png" and body["input"]["via"] == "multipart"


def test_prediction_equals_a_direct_forward_of_the_defended_model(client, checkpoints) -> None:
    model = load_checkpoint(checkpoints["mnist-tq2"]).model
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 30), dtype=np.uint8))
    data = encode(image, "PNG")
    body = client.post("/classify", content=data).json()
    pixels = decode_image(data, ImagePolicy((1, 28, 28), 4096 * 4096, 8192)).pixels
    with torch.inference_mode():
        direct = torch.softmax(model(torch.from_numpy(pixels)[None]), dim=1)[0]
    assert body["label"] == int(torch.argmax(direct))
    served = torch.tensor([body["probabilities"][str(d)] for d in range(10)])
    torch.testing.assert_close(served, direct, rtol=0, atol=1e-6)


def test_quantized_image_shows_what_the_model_saw(client) -> None:
    ramp = np.tile(np.arange(28, dtype=np.uint8) * 9, (28, 1))  # 0 .. 243 left to right
    body = client.post(
        "/classify?include_quantized=true", content=encode(Image.fromarray(ramp), "PNG")
    )
    quantized = body.json()["quantized_image"]
    assert quantized["media_type"] == "image/png"
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(quantized["data"]))))
    # Two levels, threshold 0.4: pixels above 0.4 * 255 became white, the rest black.
    np.testing.assert_array_equal(seen, np.where(ramp / 255.0 > 0.4, 255, 0))
    assert "quantized_image" not in client.post("/classify", content=PNG).json()


def test_model_parameter_picks_a_loaded_model(client) -> None:
    body = client.post("/classify?model=mnist-undefended", content=PNG).json()
    assert body["model"]["name"] == "mnist-undefended"
    assert body["defence"] == {"kind": "none", "levels": None, "thresholds": []}


def test_unknown_model_is_404(client) -> None:
    response = client.post("/classify?model=nope", content=PNG)
    assert response.status_code == 404
    assert response.json()["reason"] == "unknown_model"


def test_three_channel_models_take_grey_uploads(serve, checkpoints) -> None:
    client = serve(checkpoints=[checkpoints["cifar-cq3"]])
    body = client.post("/classify", content=PNG).json()
    assert body["defence"]["levels"] == 3 and len(body["defence"]["thresholds"]) == 2
    assert body["input"]["resized"] is True


@pytest.mark.parametrize("case", all_cases(), ids=repr)
def test_corpus_raw_body(client, case) -> None:
    headers = {"Content-Type": case.content_type} if case.content_type else {}
    response = client.post("/classify", content=case.body, headers=headers)
    assert response.status_code == case.status, response.text
    if case.reason is not None:
        assert response.json()["reason"] == case.reason
        assert set(response.json()) == {"error", "reason", "request_id"}


@pytest.mark.parametrize("case", all_cases(), ids=repr)
def test_corpus_multipart(client, case) -> None:
    upload = ("upload.bin", case.body, case.content_type or "application/octet-stream")
    response = client.post("/classify", files={"file": upload})
    assert response.status_code == case.status, response.text
    if case.reason is not None:
        assert response.json()["reason"] == case.reason
