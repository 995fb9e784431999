"""Reading and bounding request bodies: limits while streaming, slow bodies, multipart shape."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request

from service.edge.body import BodyBudget, BodyPace, read_bounded, read_image_upload
from service.errors import BodyReadTimeout, BodyTooLarge, ClientBodyLimit
from tests.service.helpers.images import TEST_BODY_LIMIT, digit, encode

PNG = encode(digit(), "PNG")


def fake_request(chunks: list[bytes], headers: dict[str, str] | None = None, stall: bool = False):
    """A request whose body arrives in ``chunks``, then (if ``stall``) never finishes."""
    pending = list(chunks)

    async def receive() -> dict:
        if pending:
            return {"type": "http.request", "body": pending.pop(0), "more_body": True}
        if stall:
            await asyncio.sleep(3600)
        return {"type": "http.request", "body": b"", "more_body": False}

    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "headers": raw_headers}, receive)


def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    read = []

    async def receive() -> dict:
        read.append(True)
        return {"type": "http.request", "body": b"x", "more_body": False}

    request = Request(
        {"type": "http", "method": "POST", "headers": [(b"content-length", b"999999")]}, receive
    )
    with pytest.raises(BodyTooLarge):
        asyncio.run(read_bounded(request, 1000, 5))
    assert read == []


def test_undeclared_body_is_cut_off_once_past_the_limit() -> None:
    consumed = []
    chunks = [b"x" * 400] * 100  # 40 kB offered, limit 1000

    async def receive() -> dict:
        consumed.append(1)
        return {"type": "http.request", "body": chunks[len(consumed) - 1], "more_body": True}

    request = Request({"type": "http", "method": "POST", "headers": []}, receive)
    with pytest.raises(BodyTooLarge):
        asyncio.run(read_bounded(request, 1000, 5))
    assert len(consumed) == 3  # stopped at the first chunk past the limit


def test_body_within_the_limit_is_returned_whole() -> None:
    request = fake_request([b"ab", b"cd"])
    assert asyncio.run(read_bounded(request, 4, 5)) == b"abcd"


def test_slow_body_times_out() -> None:
    request = fake_request([b"partial"], stall=True)
    with pytest.raises(BodyReadTimeout):
        asyncio.run(read_bounded(request, 1000, 0.05))


def test_slow_multipart_body_times_out() -> None:
    request = fake_request(
        [b"--b\r\n"], {"Content-Type": "multipart/form-data; boundary=b"}, stall=True
    )
    with pytest.raises(BodyReadTimeout):
        asyncio.run(read_image_upload(request, 1000, 0.05))


def test_chunked_upload_over_the_limit_is_413(client) -> None:
    def chunks():
        for _ in range(TEST_BODY_LIMIT // 4096 + 2):
            yield b"\x89PNG" + b"\x00" * 4092

    response = client.post("/classify", content=chunks(), headers={"Content-Type": "image/png"})
    assert response.status_code == 413
    assert response.json()["reason"] == "body_too_large"


def test_lying_content_length_is_413(client) -> None:
    response = client.post(
        "/classify", content=PNG, headers={"Content-Length": str(TEST_BODY_LIMIT + 1)}
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("files", "data", "reason"),
    [
        ({"image": ("d.png", PNG, "image/png")}, None, "missing_file"),
        ({"other": ("d.png", PNG, "image/png")}, {"file": "a plain field"}, "missing_file"),
        ({"file": ("d.png", b"", "image/png")}, None, "empty_body"),
        ({"file": ("a.png", PNG, "image/png"), "other": ("b.png", PNG, "image/png")}, None,
         "bad_multipart"),
    ],
)  # fmt: skip
def test_malformed_forms_are_400(client, files, data, reason) -> None:
    response = client.post("/classify", files=files, data=data)
    assert response.status_code == 400
    assert response.json()["reason"] == reason


def test_urlencoded_form_is_not_an_image(client) -> None:
    response = client.post("/classify", data={"file": "not a file"})
    assert response.status_code == 415


def test_garbage_multipart_is_400(client) -> None:
    response = client.post(
        "/classify",
        content=b"--x\r\nnonsense without headers",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert response.status_code == 400
    assert response.json()["reason"] == "bad_multipart"


def form(*parts: bytes, close: bool = True) -> bytes:
    body = b"".join(b"--b\r\n" + part + b"\r\n" for part in parts)
    return body + (b"--b--\r\n" if close else b"")


FILE_PART = b'Content-Disposition: form-data; name="file"; filename="d.png"\r\n\r\n' + PNG


@pytest.mark.parametrize(
    "body",
    [
        form(FILE_PART, close=False),  # cut off before the closing boundary
        form(*[b'Content-Disposition: form-data; name="f"\r\n\r\nx'] * 9, FILE_PART),
        form(b'Content-Disposition: form-data; name="big"\r\n\r\n' + b"x" * 70_000, FILE_PART),
        form(b"Content-Disposition: form-data\r\n\r\nno name", FILE_PART),
    ],
    ids=["unterminated", "too-many-parts", "oversized-field", "nameless-part"],
)
def test_unusual_forms_are_bad_multipart(client, body) -> None:
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    response = client.post("/classify", content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["reason"] == "bad_multipart"


def test_hand_built_form_with_extra_fields_is_accepted(client) -> None:
    body = form(b'Content-Disposition: form-data; name="note"\r\n\r\nhello', FILE_PART)
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    assert client.post("/classify", content=body, headers=headers).status_code == 200


def test_multipart_without_boundary_is_400(client) -> None:
    response = client.post(
        "/classify", content=PNG, headers={"Content-Type": "multipart/form-data"}
    )
    assert response.status_code == 400
    assert response.json()["reason"] == "bad_multipart"


# --- the pace a body must keep, and the budget it counts against ----------------------------


def test_the_deadline_grows_with_the_declared_length_only_as_far_as_the_timeout() -> None:
    def whole_body_seconds(declared: int | None) -> float:
        pace = BodyPace(timeout_seconds=30, min_rate=1024, grace_seconds=5, declared=declared)
        return pace.grace_seconds + (declared or 0) / pace.rate

    assert whole_body_seconds(10 * 1024) == 15  # at the floor: grace + 10 KiB at 1 KiB/s
    assert whole_body_seconds(20 * 1024) == 25
    # 5 MB could never arrive at the floor before the timeout: it must average 200 kB/s.
    assert whole_body_seconds(5_000_000) == 30
    assert BodyPace(30, 1024, 5, declared=5_000_000).rate == 200_000
    assert BodyPace(30, 1024, 5, declared=None).rate == 1024  # chunked: the floor alone
    assert BodyPace(30, 0, 5, declared=5_000_000).rate == 0  # no floor: the timeout alone


def test_a_body_declaring_much_and_sending_above_the_floor_is_cut_after_the_grace() -> None:
    async def scenario() -> str:
        sent = []

        async def receive() -> dict:
            await asyncio.sleep(0.05)  # 100 B every 50 ms: 2 kB/s, twice the floor
            sent.append(100)
            return {"type": "http.request", "body": b"x" * 100, "more_body": len(sent) < 400}

        headers = [(b"content-length", b"2000000")]
        request = Request({"type": "http", "method": "POST", "headers": headers}, receive)
        with pytest.raises(BodyReadTimeout) as caught:
            await read_bounded(request, 5_000_000, 600, min_rate=1024, grace_seconds=0.2)
        return caught.value.detail

    # 2 MB at this rate takes 1,000 s; the 600 s timeout alone would let it hold on that long.
    assert "at least 3334 B/s" in asyncio.run(scenario())


def test_a_client_holds_at_most_its_share_of_body_bytes() -> None:
    budget = BodyBudget(limit=10_000, per_client_limit=1000)
    with budget.reserve("a") as first:
        first.claim(800)  # a declared length
        with budget.reserve("a") as second, pytest.raises(ClientBodyLimit):
            second.claim(300)
        with budget.reserve("b") as other:
            other.claim(1000)  # another client has its own share
            assert budget.by_client == {"a": 800, "b": 1000}
        first.take(900)  # more arrived than declared: counted as it arrives
        assert budget.by_client == {"a": 900} and budget.used == 900
    assert budget.by_client == {} and budget.used == 0


def test_a_client_with_nothing_in_flight_may_always_start_one_body() -> None:
    budget = BodyBudget(limit=10_000, per_client_limit=100)
    with budget.reserve("a") as only:
        only.claim(5000)
        assert budget.by_client == {"a": 5000}
