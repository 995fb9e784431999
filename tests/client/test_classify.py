"""``Client`` and ``AsyncClient`` against a real service: the sample images classified as
their labels from every kind of input, the model list, typed answers that match the
service's OpenAPI schemas, and refusals raised with the service's reason code."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from client import (
    AsyncClient,
    Classification,
    Client,
    Defence,
    EncodedImage,
    JobProgress,
    ModelBrief,
    ModelDescription,
    ModelList,
    QuSecError,
    RobustnessJob,
)
from tests.client.conftest import ADMIN_TOKEN
from tests.test_samples import SAMPLES, listed

MODELS = {"mnist": "mnist-tq2", "cifar10": "cifar10-tq4"}
DIGIT = SAMPLES / "digit.png"  # MNIST test image 0, a 7


@pytest.fixture
def qusec(server):
    with Client(server.url, admin_token=ADMIN_TOKEN) as client:
        yield client


@pytest.mark.parametrize("sample", listed(), ids=lambda sample: sample.file)
def test_each_sample_is_classified_as_its_label(qusec, sample) -> None:
    result = qusec.classify(SAMPLES / sample.file, model=MODELS[sample.dataset])
    assert isinstance(result, Classification)
    assert (result.label, result.class_name) == (sample.label, sample.class_name)
    assert result.model.name == MODELS[sample.dataset] and result.model.dataset == sample.dataset
    assert max(result.probabilities, key=result.probabilities.get) == sample.class_name


def as_pil() -> Image.Image:
    with Image.open(DIGIT) as image:
        return image.copy()


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(lambda: str(DIGIT), id="str path"),
        pytest.param(lambda: DIGIT, id="Path"),
        pytest.param(DIGIT.read_bytes, id="bytes"),
        pytest.param(lambda: io.BytesIO(DIGIT.read_bytes()), id="binary file"),
        pytest.param(as_pil, id="PIL image"),
        pytest.param(lambda: np.asarray(as_pil()), id="uint8 array HW"),
        pytest.param(lambda: np.asarray(as_pil())[None] / 255.0, id="float array CHW"),
    ],
)
def test_every_kind_of_image_input_classifies_the_digit(qusec, image) -> None:
    result = qusec.classify(image())  # no model named: the service's default, mnist-pgd
    assert result.label == 7 and result.model.name == "mnist-pgd"


def test_an_rgb_array_classifies_with_the_cifar10_model(qusec) -> None:
    with Image.open(SAMPLES / "cifar10-test-3.png") as image:
        pixels = np.asarray(image.convert("RGB"))  # (32, 32, 3) uint8
    result = qusec.classify(pixels, model="cifar10-tq4")
    assert (result.label, result.class_name) == (0, "airplane")
    assert result.input["format"] == "PNG"


def test_the_quantized_and_input_images_come_back_as_pngs(qusec) -> None:
    result = qusec.classify(DIGIT, model="mnist-tq2", include_quantized=True, include_input=True)
    assert result.defence.kind == "tq" and len(result.defence.thresholds) == 1
    for encoded in (result.quantized_image, result.input_image):
        with Image.open(io.BytesIO(encoded.content())) as image:
            assert (image.format, image.size) == ("PNG", (28, 28))
    assert qusec.classify(DIGIT).quantized_image is None


def test_the_model_list_is_typed(qusec) -> None:
    listed_models = qusec.models()
    assert listed_models.ready and listed_models.default == "mnist-pgd"
    assert listed_models.names == [
        "mnist-pgd",
        "cifar10-resnet20-fgsm",
        "cifar10-resnet20",
        "mnist-tq2",
        "cifar10-tq4",
    ]
    cifar = listed_models.models[4]
    assert cifar.input_shape == [3, 32, 32] and cifar.class_names[3] == "cat"
    assert cifar.defence.kind == "tq" and cifar.defence.levels == 4
    assert listed_models.models[0].defence.kind == "none"  # adversarially trained instead
    assert qusec.ready()


def test_an_unknown_model_raises_its_reason_code(qusec) -> None:
    with pytest.raises(QuSecError) as raised:
        qusec.classify(DIGIT, model="no-such-model")
    assert (raised.value.status, raised.value.reason) == (404, "unknown_model")
    assert raised.value.request_id and not raised.value.retryable
    assert "unknown_model" in str(raised.value)


def test_bytes_that_are_no_image_raise_unsupported_format(qusec) -> None:
    with pytest.raises(QuSecError) as raised:
        qusec.classify(b"this is not an image")
    assert (raised.value.status, raised.value.reason) == (415, "unsupported_format")


def test_admin_calls_need_a_valid_token(server) -> None:
    with Client(server.url) as anonymous, pytest.raises(QuSecError) as raised:
        anonymous.list_checks()
    assert (raised.value.status, raised.value.reason) == (401, "unauthorized")
    assert raised.value.request_id  # the service's answer, not the client's guess
    wrong = Client(server.url, admin_token="not-the-admin-token-0123456789")
    with wrong, pytest.raises(QuSecError) as raised:
        wrong.list_checks()
    assert (raised.value.status, raised.value.reason) == (403, "forbidden")


def test_check_refusals_raise_their_reason_codes(qusec) -> None:
    with pytest.raises(QuSecError) as raised:
        qusec.get_check("no-such-job")
    assert (raised.value.status, raised.value.reason) == (404, "unknown_job")
    with pytest.raises(QuSecError) as raised:
        qusec.submit_check("mnist-tq2", attacks=["no-such-attack"], samples=1)
    assert (raised.value.status, raised.value.reason) == (422, "invalid_job_request")
    with pytest.raises(QuSecError) as raised:
        qusec.submit_check("no-such-model", attacks=["noise"], samples=1)
    assert (raised.value.status, raised.value.reason) == (404, "unknown_model")


def test_timeouts_are_configurable(server) -> None:
    with Client(server.url, timeout=httpx.Timeout(7.0, connect=2.0)) as client:
        assert client.http.timeout == httpx.Timeout(7.0, connect=2.0)
    # A listener that never answers: the kernel completes the connection, nobody replies.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with Client(url, timeout=0.2) as impatient, pytest.raises(httpx.ReadTimeout):
            impatient.classify(DIGIT)


# Each result type and the schema of the service's OpenAPI document it stands for.
SCHEMAS = {
    Classification: "ClassifyResponse",
    ModelBrief: "ModelBrief",
    Defence: "Defence",
    EncodedImage: "QuantizedImage",
    ModelList: "ModelList",
    ModelDescription: "ModelDescription",
    RobustnessJob: "RobustnessJob",
    JobProgress: "JobProgress",
}
# Documented with the query parameter that asks for it rather than in the schema.
UNDOCUMENTED_FIELDS = {Classification: {"input_image"}}


@pytest.mark.parametrize("result_type", SCHEMAS, ids=lambda t: t.__name__)
def test_each_result_type_has_its_schemas_fields(server, result_type) -> None:
    document = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    schema = document["components"]["schemas"][SCHEMAS[result_type]]
    fields = {field.name for field in dataclasses.fields(result_type)}
    assert fields - UNDOCUMENTED_FIELDS.get(result_type, set()) == set(schema["properties"])


def test_the_async_client_classifies_concurrently(server) -> None:
    samples = listed()

    async def classify_all() -> list[Classification]:
        async with AsyncClient(server.url, timeout=60) as qusec:
            assert await qusec.ready()
            assert (await qusec.models()).default == "mnist-pgd"
            return await asyncio.gather(
                *(
                    qusec.classify(Path(SAMPLES / s.file).read_bytes(), model=MODELS[s.dataset])
                    for s in samples
                )
            )

    results = asyncio.run(classify_all())
    assert [r.label for r in results] == [s.label for s in samples]


def test_the_async_client_raises_reason_codes_too(server) -> None:
    async def unknown_model() -> None:
        async with AsyncClient(server.url) as qusec:
            await qusec.classify(DIGIT, model="no-such-model")

    with pytest.raises(QuSecError) as raised:
        asyncio.run(unknown_model())
    assert (raised.value.status, raised.value.reason) == (404, "unknown_model")
