"""How long a connection may wait between requests: the keep-alive timeout while nothing
of the next request has arrived, the header timeout once part of its head has.

Both are kept by one lazily armed timer per connection (``GuardedHttpProtocol.
_start_waiting_for_head``), not by a timer armed and cancelled around every request.
Real server, raw sockets; the connection is judged by what it reads (an answer, a 408,
or the end of the stream), waiting on those states with generous limits.

Also here: whether a request has all arrived when its app starts (``request_arrived``),
which lets a body that came with its head be read without a timer."""

from __future__ import annotations

import threading
import time

from service.edge.connection import request_arrived
from tests.service.edge.test_loop_stalls import GET, _App
from tests.service.helpers.inprocess import serve_in_thread
from tests.service.helpers.raw_http import WAIT, connect, read_response


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout() -> None:
    # The header timeout is an hour: only the keep-alive timeout can close it.
    limits = {"header_timeout_seconds": 3600.0, "keep_alive_seconds": 1}
    with serve_in_thread(_App(), **limits) as port, connect(port) as sock:
        for _ in range(3):  # each answer starts the wait again
            sock.sendall(GET)
            assert read_response(sock)[0] == 200
        assert sock.recv(1) == b""  # closed by the server, with nothing sent


def test_a_connection_never_used_waits_for_the_header_timeout_alone() -> None:
    # Nothing is sent at all: the keep-alive timeout (an hour) is not what closes it.
    limits = {"header_timeout_seconds": 1.0, "keep_alive_seconds": 3600}
    with serve_in_thread(_App(), **limits) as port, connect(port) as sock:
        assert sock.recv(1) == b""


def test_a_head_begun_after_an_answer_may_take_longer_than_the_keep_alive_timeout() -> None:
    # Part of the next head arrives right after the answer; the rest only after twice the
    # keep-alive timeout (a pause: longer on a loaded machine, never shorter). From its
    # first byte the header timeout applies, not the keep-alive close.
    limits = {"header_timeout_seconds": 60.0, "keep_alive_seconds": 1}
    with serve_in_thread(_App(), **limits) as port, connect(port) as sock:
        sock.sendall(GET)
        assert read_response(sock)[0] == 200
        sock.sendall(GET[:20])
        time.sleep(2.0)
        sock.sendall(GET[20:])
        assert read_response(sock)[0] == 200


def test_a_head_left_unfinished_after_an_answer_gets_a_408() -> None:
    limits = {"header_timeout_seconds": 1.0, "keep_alive_seconds": 3600}
    with serve_in_thread(_App(), **limits) as port, connect(port) as sock:
        sock.sendall(GET)
        assert read_response(sock)[0] == 200
        sock.sendall(GET[:20])
        status, _, body = read_response(sock)
    assert (status, body["reason"]) == (408, "request_header_timeout")


def test_many_requests_on_one_connection_are_all_served() -> None:
    # The timer armed for the first wait fires while later requests are served and waits on.
    limits = {"header_timeout_seconds": 1.0, "keep_alive_seconds": 1}
    with serve_in_thread(_App(), **limits) as port, connect(port) as sock:
        for _ in range(2000):
            sock.sendall(GET)
            assert read_response(sock)[0] == 200
        assert sock.recv(1) == b""


class _Arrival:
    """Records ``request_arrived(receive)`` as each request's app starts, then reads the
    body and answers; ``started`` is set once the app has looked."""

    def __init__(self) -> None:
        self.seen: list[bool] = []
        self.started = threading.Event()

    async def __call__(self, scope, receive, send) -> None:
        self.seen.append(request_arrived(receive))
        self.started.set()
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})


def _post(body: bytes) -> bytes:
    return b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def test_a_request_sent_whole_has_arrived_before_its_app_starts() -> None:
    # A body sent with its head needs no timer to be read (``service.edge.body``).
    app = _Arrival()
    with serve_in_thread(app) as port, connect(port) as sock:
        sock.sendall(_post(b"x" * 100))
        assert read_response(sock)[0] == 200
    assert app.seen == [True]


def test_a_request_whose_body_is_on_its_way_has_not_arrived() -> None:
    app = _Arrival()
    with serve_in_thread(app) as port, connect(port) as sock:
        request = _post(b"x" * 100)
        sock.sendall(request[:-100])
        assert app.started.wait(WAIT)
        sock.sendall(request[-100:])
        assert read_response(sock)[0] == 200
    assert app.seen == [False]


def test_arrival_is_unknown_outside_the_served_connection() -> None:
    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    assert request_arrived(receive) is False
