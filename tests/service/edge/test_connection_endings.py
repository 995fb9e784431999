"""Every connection ends: answers given before a request has all arrived, and oversized ones.

Against the real server over raw sockets. A connection answered early (an early 413, a
health check with a body) has the rest of its request read and discarded within the
linger bounds, then waits for the next request as a keep-alive connection does, and is
closed by the keep-alive timeout; one whose request never ends is closed after the
linger time. Oversized heads and bodies are read and discarded up to the linger bound,
so the client reads the JSON 431/413 before the close, not a reset. Waits are for states
(an answer, a close) with generous limits; nothing is timed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.service.helpers.images import TEST_BODY_LIMIT
from tests.service.helpers.raw_http import classify_head, closed_by_server, connect, read_response
from tests.service.helpers.servers import STOPPED_BY_SIGTERM, Server, start_server, stop

pytestmark = pytest.mark.slow

HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
SETTINGS = {
    "QUSEC_KEEP_ALIVE_TIMEOUT_SECONDS": "1",
    "QUSEC_REQUEST_HEADER_TIMEOUT_SECONDS": "3",
    "QUSEC_LINGER_SECONDS": "3",
}


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("endings") / "server.log"
    running = start_server(log, ["--checkpoint", str(checkpoints["mnist-tq2"])], SETTINGS)
    yield running
    assert stop(running) in STOPPED_BY_SIGTERM, log.read_text()[-4000:]


def test_a_health_check_answered_before_its_body_returns_to_keep_alive(server: Server) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n")
        assert read_response(sock)[0] == 200  # answered with the body still to come
        sock.sendall(b"A" + HEALTH)  # the body, then the next request on the same connection
        assert read_response(sock)[0] == 200
    with connect(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n")
        assert read_response(sock)[0] == 200
        sock.sendall(b"A")
        # Idle after its request: the keep-alive timeout closes it (before, it stayed open).
        assert closed_by_server(sock)


def test_an_early_413_discards_the_body_and_keeps_the_connection(server: Server) -> None:
    declared = TEST_BODY_LIMIT + 50_000
    with connect(server.port) as sock:
        sock.sendall(classify_head(declared))
        status, _, body = read_response(sock)
        assert (status, body["reason"]) == (413, "body_too_large")
        sock.sendall(b"\x00" * declared + HEALTH)
        assert read_response(sock)[0] == 200
        assert closed_by_server(sock)


def test_a_request_that_never_ends_after_an_early_answer_is_closed(server: Server) -> None:
    with connect(server.port) as sock:
        sock.sendall(classify_head(TEST_BODY_LIMIT + 50_000))
        assert read_response(sock)[2]["reason"] == "body_too_large"
        sock.sendall(b"\x00" * 10)  # some of the body, after the answer, and no more
        assert closed_by_server(sock)  # after the linger time; before, never


def test_an_early_answer_to_a_closing_request_lingers_for_its_body(server: Server) -> None:
    declared = TEST_BODY_LIMIT + 4 * 1024 * 1024
    with connect(server.port) as sock:
        sock.sendall(classify_head(declared, b"Connection: close\r\n"))
        status, headers, body = read_response(sock)
        assert (status, body["reason"], headers["connection"]) == (413, "body_too_large", "close")
        sock.sendall(b"\x00" * declared)  # read and discarded by the server, not reset
        assert sock.recv(1) == b""  # then a clean end of stream


OVERSIZED = {
    "1 MiB header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n",
    "8 MB URL": b"GET /" + b"a" * 8_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "12 MB body": classify_head(12_000_000) + b"\x00" * 12_000_000,
}
ANSWERS = {
    "1 MiB header": (431, "headers_too_large"),
    "8 MB URL": (431, "headers_too_large"),
    "12 MB body": (413, "body_too_large"),
}


@pytest.mark.parametrize("name", OVERSIZED)
def test_an_oversized_request_gets_its_json_answer_before_the_close(server, name) -> None:
    with connect(server.port) as sock:
        sock.sendall(OVERSIZED[name])  # all of it: the server reads and discards the excess
        status, headers, body = read_response(sock)
        assert (status, body["reason"]) == ANSWERS[name]
        assert headers["content-type"] == "application/json"
        assert closed_by_server(sock)
