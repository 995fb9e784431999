"""POST /classify as an express request (``service.api.express``) over real HTTP: the same
answers, headers, errors, logs and metrics as through the ASGI app, which a request still
takes when it carries proxy headers (or its body had not all arrived)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from PIL import Image

from service.app import create_app
from service.server import connection_limits
from tests.service.helpers.admin import metric_value
from tests.service.helpers.images import digit, encode
from tests.service.helpers.inprocess import serve_in_thread
from tests.service.helpers.raw_http import WAIT, connect

PNG = encode(digit(), "PNG")
BODY_LIMIT = 4096
# Read by uvicorn's proxy-headers layer: such a request goes through the ASGI app.
ASGI = {"X-Forwarded-Proto": "http"}
# Parts of an answer that differ from one request to the next.
_PER_REQUEST = {"request_id", "timings_seconds", "batch_rows"}


class Counted:
    """Counts the calls of an async callable."""

    def __init__(self, call: Callable[..., Any]) -> None:
        self.call = call
        self.calls = 0

    async def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return await self.call(*args)


@dataclass
class Live:
    port: int
    client: httpx.Client
    express: Counted  # the express handler of ``POST /classify``
    asgi: Counted  # its ASGI call


@dataclass
class Raw:
    """A response as it came: status, headers in order, body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> str:
        return next(v for k, v in self.headers if k == name).decode("latin-1")

    def json(self) -> dict:
        return json.loads(self.body)


@pytest.fixture
def live(make_settings) -> Iterator[Live]:
    """The service's app under uvicorn with its own connection layer, in this process,
    with the express and ASGI handlers of ``POST /classify`` counted."""
    app = create_app(make_settings(max_body_bytes=BODY_LIMIT))
    express = app.express.handlers[("POST", b"/classify")]
    express.respond = express_calls = Counted(express.respond)
    asgi_calls = Counted(app.fast_routes[("POST", "/classify")])
    app.fast_routes[("POST", "/classify")] = asgi_calls
    with (
        serve_in_thread(app, connection_limits(app.state.settings, app)) as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=WAIT) as client,
    ):
        deadline = time.monotonic() + WAIT
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the service did not become ready"
            time.sleep(0.05)
        yield Live(port, client, express_calls, asgi_calls)


def _send(port: int, url: str, headers: dict[str, str], **content: Any) -> Raw:
    """The request built as httpx builds it, sent in one write (so it arrives whole)."""
    request = httpx.Request("POST", f"http://x{url}", headers=headers, **content)
    body = request.read()
    lines = [b"POST %s HTTP/1.1" % request.url.raw_path]
    lines += [name + b": " + value for name, value in request.headers.raw]
    with connect(port) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536) or _eof(data)
        head, rest = data.split(b"\r\n\r\n", 1)
        status_line, *fields = head.split(b"\r\n")
        pairs = [tuple(field.split(b": ", 1)) for field in fields]
        length = int(next(v for k, v in pairs if k == b"content-length"))
        while len(rest) < length:
            rest += sock.recv(65536) or _eof(rest)
    return Raw(int(status_line.split()[1]), pairs, rest)  # type: ignore[arg-type]


def _eof(data: bytes) -> bytes:
    raise EOFError(f"connection closed after {data!r}")


def _both(
    live: Live, url: str = "/classify", whole: bool = True, **request: Any
) -> tuple[Raw, Raw]:
    """The same request as an express one and through the ASGI app (``whole``: the body
    arrives with its head in one read, which a loopback write of a few kilobytes does, so
    the first is certainly an express one)."""
    headers = request.pop("headers", {})
    before = live.express.calls, live.asgi.calls
    fast = _send(live.port, url, headers, **request)
    assert live.express.calls + live.asgi.calls == sum(before) + 1
    assert not whole or live.express.calls == before[0] + 1
    asgi_before = live.asgi.calls
    slow = _send(live.port, url, {**headers, **ASGI}, **request)
    assert live.asgi.calls == asgi_before + 1
    return fast, slow


def _same(fast: Raw, slow: Raw) -> None:
    assert fast.status == slow.status
    # The same headers in the same order; only the date, the request id and (with the
    # request id in the body) the length may differ.
    assert [k for k, _ in fast.headers] == [k for k, _ in slow.headers]
    varying = {b"date", b"x-request-id", b"content-length"}
    assert [h for h in fast.headers if h[0] not in varying] == [
        h for h in slow.headers if h[0] not in varying
    ]
    one, other = fast.json(), slow.json()
    assert one["request_id"] == fast.header(b"x-request-id")
    assert other["request_id"] == slow.header(b"x-request-id")
    assert {k: v for k, v in one.items() if k not in _PER_REQUEST} == {
        k: v for k, v in other.items() if k not in _PER_REQUEST
    }


def test_an_image_gets_the_same_answer_either_way(live) -> None:
    fast, slow = _both(live, content=PNG, headers={"Content-Type": "image/png"})
    assert fast.status == 200
    _same(fast, slow)
    assert set(fast.json()["timings_seconds"]) == set(slow.json()["timings_seconds"])


def test_a_form_and_the_query_parameters_give_the_same_answer_either_way(live) -> None:
    files = {"file": ("digit.png", PNG, "image/png")}
    url = "/classify?model=mnist-undefended&include_input=true&include_quantized=1"
    fast, slow = _both(live, url=url, files=files)
    assert fast.status == 200 and fast.json()["model"]["name"] == "mnist-undefended"
    assert fast.json()["input"]["via"] == "multipart"
    assert "quantized_image" in fast.json() and "input_image" in fast.json()
    _same(fast, slow)


def test_a_warning_header_is_the_same_either_way(live) -> None:
    red = io.BytesIO()
    Image.new("RGB", (28, 28), (200, 30, 30)).save(red, "PNG")  # colour, for a grey model
    fast, slow = _both(live, content=red.getvalue())
    assert fast.status == 200 and fast.json()["warnings"]
    assert fast.header(b"qusec-input-warning") == "colour_image_for_grey_model"
    _same(fast, slow)


@pytest.mark.parametrize(
    ("url", "body", "status", "reason"),
    [
        ("/classify?model=nope", PNG, 404, "unknown_model"),
        ("/classify?colour=red", PNG, 400, "unknown_query_parameter"),
        ("/classify?include_input=perhaps", PNG, 422, "invalid_request"),
        ("/classify", b"", 400, "empty_body"),
        ("/classify", b"not an image at all", 415, "unsupported_format"),
        ("/classify", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, 400, "bad_checksum"),
        ("/classify", b"x" * (BODY_LIMIT + 1), 413, "body_too_large"),
    ],
)
def test_a_refusal_is_the_same_either_way(live, url, body, status, reason) -> None:
    fast, slow = _both(live, url=url, content=body)
    assert fast.status == status and fast.json()["reason"] == reason, fast.json()
    _same(fast, slow)


def test_the_client_s_request_id_is_kept_and_the_request_counted_and_logged(live, caplog) -> None:
    def classified() -> float:
        text = live.client.get("/metrics").text
        try:
            return metric_value(
                text, "qusec_http_requests_total", endpoint="/classify", method="POST", status=200
            )
        except AssertionError:  # none counted yet
            return 0.0

    before, calls = classified(), live.express.calls
    with caplog.at_level("INFO", logger="service.access"):
        answer = _send(live.port, "/classify", {"X-Request-ID": "my-id-42"}, content=PNG)
    assert live.express.calls == calls + 1
    assert answer.header(b"x-request-id") == "my-id-42" == answer.json()["request_id"]
    lines = [r for r in caplog.records if r.name == "service.access"]
    assert [(r.getMessage(), r.status) for r in lines] == [("POST /classify 200", 200)]
    # Metrics are applied between requests; read until the count shows (or the wait ends).
    deadline = time.monotonic() + WAIT
    while classified() < before + 1:
        assert time.monotonic() < deadline, "the express request was not counted"
        time.sleep(0.05)


def test_an_unexpected_error_is_a_500_with_the_request_id(live, monkeypatch) -> None:
    async def broken(app, request):
        raise RuntimeError("nobody answers this")

    calls = live.express.calls
    monkeypatch.setattr(live.express, "call", broken)
    answer = _send(live.port, "/classify", {}, content=PNG)
    assert live.express.calls == calls + 1
    assert answer.status == 500 and answer.json()["reason"] == "internal_error"
    assert answer.json()["request_id"] == answer.header(b"x-request-id")
    # The service serves on.
    monkeypatch.undo()
    assert _send(live.port, "/classify", {}, content=PNG).status == 200
