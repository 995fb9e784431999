"""No client takes more than its share: per-client caps and eviction, over real HTTP.

The hostile client connects from 127.0.0.3 and the honest one from 127.0.0.2 (Linux
routes the whole of 127.0.0.0/8 to the server), so the server sees two clients. Each
test shows the hostile client held to its share and the honest one served; waits are
for states (an answer, a close), with generous limits, never timed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.service.helpers.images import digit, encode
from tests.service.helpers.raw_http import (
    classify_head,
    client_from,
    closed_by_server,
    connect,
    read_response,
)
from tests.service.helpers.servers import STOPPED_BY_SIGTERM, Server, start_server, stop

pytestmark = pytest.mark.slow

HOG, HONEST = "127.0.0.3", "127.0.0.2"
PNG = encode(digit(), "PNG")
PER_CLIENT_CONNECTIONS = 8
PER_CLIENT_BODY_BYTES = 600 * 1024
SHARES = {  # the per-client caps, a body timeout long enough that only the pace can cut
    "QUSEC_MAX_CONNECTIONS_PER_CLIENT": str(PER_CLIENT_CONNECTIONS),
    "QUSEC_MAX_BUFFERED_BODY_BYTES_PER_CLIENT": str(PER_CLIENT_BODY_BYTES),
    "QUSEC_MAX_BODY_BYTES": str(5_000_000),
    "QUSEC_BODY_READ_TIMEOUT_SECONDS": "600",
    "QUSEC_BODY_MIN_RATE_GRACE_SECONDS": "2",
    "QUSEC_REQUEST_HEADER_TIMEOUT_SECONDS": "60",
}
MAX_CONNECTIONS = 24
CROWDED = {  # a small server with no per-client caps and no rate floor: only eviction acts
    "QUSEC_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    "QUSEC_MAX_CONNECTIONS_PER_CLIENT": "0",
    "QUSEC_MAX_BUFFERED_BODY_BYTES_PER_CLIENT": "0",
    "QUSEC_BODY_MIN_RATE_BYTES_PER_SECOND": "0",
    "QUSEC_BODY_READ_TIMEOUT_SECONDS": "600",
    "QUSEC_REQUEST_HEADER_TIMEOUT_SECONDS": "60",
}


def _server(checkpoints, tmp_path_factory, settings: dict[str, str]) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("fair-share") / "server.log"
    running = start_server(log, ["--checkpoint", str(checkpoints["mnist-tq2"])], settings)
    yield running
    assert stop(running) in STOPPED_BY_SIGTERM, log.read_text()[-4000:]


@pytest.fixture(scope="module")
def shares(checkpoints, tmp_path_factory) -> Iterator[Server]:
    yield from _server(checkpoints, tmp_path_factory, SHARES)


@pytest.fixture(scope="module")
def crowded(checkpoints, tmp_path_factory) -> Iterator[Server]:
    yield from _server(checkpoints, tmp_path_factory, CROWDED)


def honest_classify(server: Server) -> int:
    with client_from(HONEST, server.url) as http:
        return http.post("/classify", content=PNG).status_code


@contextlib.contextmanager
def trickling(socks: list[socket.socket], bytes_per_tick: int) -> Iterator[None]:
    """Send ``bytes_per_tick`` to each socket every 0.1 s until the block ends."""
    done = threading.Event()

    def trickle() -> None:
        while not done.wait(0.1):
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.send(b"\x00" * bytes_per_tick)

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        yield
    finally:
        done.set()
        sender.join()


def test_a_client_past_its_connection_cap_is_refused_while_others_are_served(shares) -> None:
    held = [connect(shares.port, HOG) for _ in range(PER_CLIENT_CONNECTIONS)]
    try:
        with connect(shares.port, HOG) as extra:
            status, headers, body = read_response(extra)
            assert (status, body["reason"]) == (429, "client_connection_limit")
            assert headers["retry-after"] == "1"
            assert closed_by_server(extra)
        assert honest_classify(shares) == 200
    finally:
        for sock in held:
            sock.close()


def test_a_client_holds_at_most_its_share_of_body_bytes(shares) -> None:
    declared = PER_CLIENT_BODY_BYTES // 2 - 1000  # two fit in the share, a third does not
    uploads = [connect(shares.port, HOG) for _ in range(2)]
    try:
        for sock in uploads:
            sock.sendall(classify_head(declared))
        with trickling(uploads, 200):  # 2 kB/s each: above the floor, so they stay
            with connect(shares.port, HOG) as third:
                third.sendall(classify_head(declared))
                status, headers, body = read_response(third)
            assert (status, body["reason"]) == (429, "client_body_limit")
            assert str(PER_CLIENT_BODY_BYTES) in body["error"] and headers["retry-after"] == "1"
            assert honest_classify(shares) == 200
    finally:
        for sock in uploads:
            sock.close()


def test_a_body_declared_large_must_arrive_at_the_pace_its_length_needs(shares) -> None:
    # 5 MB within the 600 s timeout needs 8.4 kB/s; 2 kB/s is twice the floor of 1 kB/s,
    # which alone would let this upload hold its connection for the full 600 s.
    with connect(shares.port, HOG) as upload:
        upload.sendall(classify_head(5_000_000))
        with trickling([upload], 200):
            status, _, body = read_response(upload)
    assert (status, body["reason"]) == (408, "body_read_timeout")
    # A small body at the same rate needs only the floor, and is served.
    small = encode(digit((200, 200)), "PNG", compress_level=0)  # about 40 kB
    with connect(shares.port, HONEST) as sock:
        sock.sendall(classify_head(len(small)))
        for start in range(0, len(small), 2000):
            sock.sendall(small[start : start + 2000])  # at full speed: well above the pace
        assert read_response(sock)[0] == 200


def test_when_full_the_client_holding_the_most_gives_way(crowded) -> None:
    hog = [connect(crowded.port, HOG) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in hog:
            sock.sendall(classify_head(100_000) + b"\x00")  # uploads that crawl
        with client_from(HONEST, crowded.url) as http:
            assert http.post("/classify", content=PNG).status_code == 200  # room was made
            # The server is full again (the hog's and this one); the hog's newcomer is refused
            # rather than given room by closing the hog's own uploads or the honest client's.
            with connect(crowded.port, HOG) as newcomer:
                status, _, body = read_response(newcomer)
            assert (status, body["reason"]) == (503, "too_many_connections")
            assert http.post("/classify", content=PNG).status_code == 200  # kept alive
        answered = []
        for sock in hog:
            sock.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                answered.append(read_response(sock)[2]["reason"])
        assert answered == ["too_many_connections"]  # exactly one of the hog's gave way
    finally:
        for sock in hog:
            sock.close()
