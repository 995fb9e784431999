"""Hostile files: each is refused with its reason, or decoded within the decode budget."""

from __future__ import annotations

import pytest
from PIL import Image

from service.errors import ServiceError
from service.sanitize.imaging import ImagePolicy, decode_image
from tests.service.helpers.hostile_files import budget_cases, integrity_cases, progressive_jpeg
from tests.service.helpers.images import Case, digit, encode

POLICY = ImagePolicy(input_shape=(1, 28, 28), max_pixels=4096 * 4096, max_side=8192)
INTEGRITY = integrity_cases()
BUDGET = budget_cases()
# The decode budget in the workers is what these tests are about: the anonymous ceiling on
# the estimated cost, which would refuse several of these files first, is lifted.
NO_CEILING = 1 << 50


@pytest.mark.parametrize("case", INTEGRITY, ids=repr)
def test_the_decoder_refuses_each_structural_fault_with_its_reason(case: Case) -> None:
    with pytest.raises(ServiceError) as caught:
        decode_image(case.body, POLICY)
    assert (caught.value.status, caught.value.reason) == (case.status, case.reason)


def test_well_formed_files_of_every_format_pass_the_structure_checks() -> None:
    for fmt, mode in (("PNG", "L"), ("JPEG", "RGB"), ("GIF", "P"), ("WEBP", "RGB"), ("BMP", "RGB")):
        assert decode_image(encode(digit(mode=mode), fmt), POLICY).pixels.shape == (1, 28, 28)
    progressive = encode(digit((640, 480), "RGB"), "JPEG", progressive=True)
    assert decode_image(progressive, POLICY).facts["format"] == "JPEG"


def test_the_scan_cap_is_a_setting() -> None:
    few = ImagePolicy(input_shape=(1, 28, 28), max_pixels=1 << 20, max_side=1024, max_jpeg_scans=3)
    with pytest.raises(ServiceError, match="more than 3 scans"):
        decode_image(progressive_jpeg(2, side=256), few)


@pytest.mark.parametrize("case", INTEGRITY + BUDGET, ids=repr)
def test_the_service_answers_each_hostile_file(serve, case: Case) -> None:
    # The fixture's generous decode deadline: on a loaded machine the budget cases must not
    # race it.
    client = serve(decode_processes=1, anonymous_max_decode_cost_bytes=NO_CEILING)
    response = client.post("/classify", content=case.body, headers={"content-type": "image/png"})
    assert response.status_code == case.status, response.text
    assert response.json().get("reason") == case.reason
    if case.status == 200:
        assert response.json()["input"]["width"] == 4096


def test_a_decode_past_its_deadline_is_refused_and_its_worker_replaced(serve) -> None:
    client = serve(
        decode_timeout_seconds=0.05, decode_processes=1, anonymous_max_decode_cost_bytes=NO_CEILING
    )
    slow = progressive_jpeg(20)
    response = client.post("/classify", content=slow)
    assert response.status_code == 413
    assert response.json()["reason"] == "decode_budget_exceeded"
    workers = client.app.state.pool.decode_workers
    assert workers.killed == 1
    # The next upload gets a fresh worker; a tiny one is decoded inline and never waits.
    assert client.post("/classify", content=encode(digit(), "PNG")).status_code == 200
    metrics = client.get("/metrics").text
    assert 'qusec_rejections_total{reason="decode_budget_exceeded"} 1.0' in metrics


def test_a_decode_over_the_memory_cap_is_refused_in_the_worker(serve) -> None:
    # 128 MiB of RGBA pixels on top of the worker's own ~150 MiB of address space (it loads
    # neither torch nor a web framework): more than the 256 MiB cap leaves.
    client = serve(
        decode_max_memory_bytes=256 << 20,
        max_image_pixels=8192 * 4096,
        anonymous_max_decode_cost_bytes=NO_CEILING,
    )
    response = client.post("/classify", content=encode(Image.new("RGBA", (8192, 4096)), "PNG"))
    assert response.status_code == 413
    assert response.json()["reason"] == "decode_budget_exceeded"


def test_every_new_reason_is_counted_from_zero(client) -> None:
    metrics = client.get("/metrics").text
    for reason in (
        "bad_checksum",
        "inconsistent_frame",
        "trailing_data",
        "too_many_scans",
        "decode_budget_exceeded",
        "headers_too_large",
        "too_many_headers",
        "request_header_timeout",
        "too_many_connections",
        "bad_http_request",
        "decode_cost_too_high",
        "client_decode_limit",
        "client_body_limit",
        "client_connection_limit",
    ):
        assert f'qusec_rejections_total{{reason="{reason}"}} 0.0' in metrics
