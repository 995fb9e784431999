"""A response's head goes out with its body, and never waits for a body that is not coming.

The connection layer holds a response's head back and writes it with the first body bytes
in one send (``service.edge.connection._CycleTransport``). Against a real uvicorn server
running that protocol over raw sockets, with a small app of its own: a plain answer
arrives whole; a streaming answer's head arrives while its body is still held back by
the test (so nothing waits on the body); a HEAD answer, which has no body at all, arrives
and the connection goes on; pipelined answers keep their order. Waits are for states,
with generous limits.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.service.helpers.inprocess import serve_in_thread
from tests.service.helpers.raw_http import WAIT, connect

BODY = b"the whole answer"


class _App:
    """``/plain``: a fixed body with its length. ``/stream``: the head, then the body only
    once the test sets ``release`` (no length: chunked)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    async def __call__(self, scope, receive, send) -> None:
        assert scope["type"] == "http"
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await asyncio.to_thread(self.release.wait, WAIT)
            await send({"type": "http.response.body", "body": b"late"})
            return
        headers = [(b"content-length", str(len(BODY)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[int, _App]]:
    app = _App()
    with serve_in_thread(app) as port:
        yield port, app
        app.release.set()


def _read_until(sock: socket.socket, marker: bytes, data: bytes = b"") -> bytes:
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(f"closed after {data!r}")
        data += chunk
    return data


def test_a_plain_answer_arrives_whole(served) -> None:
    port, _ = served
    with connect(port) as sock:
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        data = _read_until(sock, BODY)
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    assert f"content-length: {len(BODY)}".encode() in head.lower()
    assert body == BODY


def test_a_head_is_sent_while_its_body_is_still_to_come(served) -> None:
    port, app = served
    app.release.clear()
    with connect(port) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        head = _read_until(sock, b"\r\n\r\n")  # the app has not sent its body yet
        assert not app.release.is_set()
        assert head.startswith(b"HTTP/1.1 200")
        assert b"transfer-encoding: chunked" in head.lower()
        app.release.set()
        data = _read_until(sock, b"0\r\n\r\n", head.split(b"\r\n\r\n", 1)[1])
    assert b"late" in data


def test_a_head_request_is_answered_and_the_connection_goes_on(served) -> None:
    port, _ = served
    with connect(port) as sock:
        sock.sendall(b"HEAD /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        head = _read_until(sock, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert head.endswith(b"\r\n\r\n")  # the head alone: no body follows
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        data = _read_until(sock, BODY)
    assert data.startswith(b"HTTP/1.1 200")


def test_pipelined_answers_keep_their_order(served) -> None:
    port, _ = served
    with connect(port) as sock:
        sock.sendall(
            b"HEAD /plain HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD /plain HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        data = b""
        while data.count(b"HTTP/1.1 200") < 4 or data.count(BODY) < 2:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError(f"closed after {data!r}")
            data += chunk
    answers = data.split(b"HTTP/1.1 200")[1:]
    assert [BODY in answer for answer in answers] == [False, True, False, True]
