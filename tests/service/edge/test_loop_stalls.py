"""A request head that arrived in time is served even when the event loop was held up past
the head timeout. libuv runs expired timers before it reads the sockets, so without a
second look the head timer would close a connection whose head was already waiting
(``GuardedHttpProtocol._head_timed_out``). Real server, raw sockets. The stall blocks the
loop for three head timeouts from an I/O callback (where a loop starved of CPU stalls
too: the next turn starts with the timers), and the second request is sent only once
the stall has begun (an event, not a delay)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from tests.service.helpers.inprocess import serve_in_thread
from tests.service.helpers.raw_http import WAIT, connect, read_response

HEAD_TIMEOUT = 1.0
GET = b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"


class _App:
    """A small JSON answer; on ``/stall`` the event loop is then held up for three head
    timeouts, by a blocking sleep in a reader's callback that sets ``stalling`` first (so
    the connection's head timer, armed as the answer completes, expires in the stall)."""

    def __init__(self) -> None:
        self.stalling = threading.Event()

    async def __call__(self, scope, receive, send) -> None:
        if scope["path"] == "/stall":
            loop = asyncio.get_running_loop()
            readable, writer = socket.socketpair()

            def stall() -> None:
                loop.remove_reader(readable)
                self.stalling.set()
                time.sleep(3 * HEAD_TIMEOUT)  # on purpose: nothing else runs meanwhile
                readable.close()
                writer.close()

            loop.add_reader(readable, stall)
            writer.send(b"x")
        body = b'{"ok": true}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"12")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def test_a_head_sent_in_time_during_a_stall_is_served() -> None:
    app = _App()
    with serve_in_thread(app, header_timeout_seconds=HEAD_TIMEOUT) as port, connect(port) as sock:
        sock.sendall(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200  # the connection now waits for its next head
        assert app.stalling.wait(WAIT)
        sock.sendall(GET)  # sent in time: the stall began as its head timer was armed
        assert read_response(sock)[0] == 200


def test_a_connection_that_sends_nothing_is_still_closed() -> None:
    app = _App()
    with serve_in_thread(app, header_timeout_seconds=HEAD_TIMEOUT) as port, connect(port) as idle:
        assert idle.recv(1) == b""  # closed by the server, with nothing sent
