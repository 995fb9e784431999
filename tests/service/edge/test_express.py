"""Express requests (``service.edge.express``) at the connection layer, over real sockets:
a request that arrived whole goes to the express handler, anything else to the ASGI app,
and the connection behaves as it does for ASGI answers (order, keep-alive, close)."""

from __future__ import annotations

import asyncio
import gc
import json
import threading

from service.edge.express import Answer, ExpressCycle, ExpressRequest
from tests.service.helpers.inprocess import serve_in_thread
from tests.service.helpers.raw_http import WAIT, closed_by_server, connect, read_responses


def _json(status: int, body: dict) -> Answer:
    content = json.dumps(body).encode()
    return Answer(status, [(b"content-type", b"application/json"), _length(content)], content)


def _length(content: bytes) -> tuple[bytes, bytes]:
    return (b"content-length", b"%d" % len(content))


class Recorder:
    """The express hook (``ConnectionLimits.express``) for ``POST /express``, and an ASGI
    app for everything; each says which of them answered."""

    def __init__(self) -> None:
        self.express_seen: list[ExpressRequest] = []
        self.asgi_entered = threading.Event()
        self.hold = False  # set by a test: express answers wait for ``release``
        self.held = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.release_event: asyncio.Event | None = None
        self.finished = threading.Event()
        self.closed = threading.Event()
        self.fail = False

    def release(self) -> None:
        """Let a held answer go (from the test's thread)."""
        assert self.loop is not None and self.release_event is not None
        self.hold = False
        self.loop.call_soon_threadsafe(self.release_event.set)

    def hook(self, method: str, target: bytes, headers: list) -> object:
        if method == "POST" and target.partition(b"?")[0] == b"/express":
            return self.handler
        return None

    async def handler(self, request: ExpressRequest) -> Answer:
        self.express_seen.append(request)
        if self.hold:
            self.loop = asyncio.get_running_loop()
            self.release_event = asyncio.Event()
            self.held.set()
            await self.release_event.wait()
        self.finished.set()
        if self.fail:
            raise RuntimeError("the handler failed")
        headers = {k.decode(): v.decode() for k, v in request.headers}
        return _json(200, {"via": "express", "body": len(request.body), "headers": headers})

    async def __call__(self, scope, receive, send) -> None:  # the ASGI app
        self.asgi_entered.set()
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        content = json.dumps({"via": "asgi", "body": len(body), "path": scope["path"]}).encode()
        headers = [(b"content-type", b"application/json"), _length(content)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def _post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n" % (path, len(body), extra)
        + body
    )


def test_a_request_that_arrived_whole_is_answered_by_the_express_handler() -> None:
    recorder = Recorder()
    with serve_in_thread(recorder, express=recorder.hook) as port, connect(port) as sock:
        sock.sendall(_post(b"/express?x=1", b"abc", b"X-Thing: 1\r\n"))
        ((status, headers, body),) = read_responses(sock, 1)
        assert status == 200 and body["via"] == "express" and body["body"] == 3
        assert body["headers"]["x-thing"] == "1"  # names lower-cased, as ASGI has them
        assert "date" in headers  # the server's default headers, as on ASGI answers
        (request,) = recorder.express_seen
        assert (request.method, request.path, request.query) == ("POST", b"/express", b"x=1")
        assert request.body == b"abc" and request.client[0] == "127.0.0.1"
        # Other paths and methods go to the app, on the same connection.
        sock.sendall(_post(b"/other", b"abc") + b"GET /express HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = read_responses(sock, 2)
        assert [a[2]["via"] for a in answers] == ["asgi", "asgi"]
        assert len(recorder.express_seen) == 1


def test_a_body_still_on_its_way_goes_through_the_asgi_app_whole() -> None:
    recorder = Recorder()
    body = bytes(range(256)) * 40
    with serve_in_thread(recorder, express=recorder.hook) as port, connect(port) as sock:
        request = _post(b"/express", body)
        sock.sendall(request[:-5000])
        # Only the app's request cycle can be waiting for the rest.
        assert recorder.asgi_entered.wait(WAIT)
        sock.sendall(request[-5000:])
        ((status, _, answer),) = read_responses(sock, 1)
        assert status == 200 and answer == {"via": "asgi", "body": len(body), "path": "/express"}
        assert recorder.express_seen == []
        # The connection goes on: the next request, whole, is an express one.
        sock.sendall(_post(b"/express", b"abc"))
        assert read_responses(sock, 1)[0][2]["via"] == "express"


def test_pipelined_requests_are_answered_in_order() -> None:
    recorder = Recorder()
    with serve_in_thread(recorder, express=recorder.hook) as port, connect(port) as sock:
        sock.sendall(
            _post(b"/express", b"1")
            + _post(b"/other", b"22")
            + _post(b"/express", b"333")
            + _post(b"/express", b"4444")
        )
        answers = read_responses(sock, 4)
        # Behind a request still being answered, a request waits in uvicorn's pipeline and
        # is answered through a request cycle; whether the last two still find one being
        # answered depends on how the bytes were read, so only the order is certain.
        assert [a[2]["body"] for a in answers] == [1, 2, 3, 4]
        assert [a[2]["via"] for a in answers[:2]] == ["express", "asgi"]


def test_a_request_behind_an_express_one_waits_for_its_answer() -> None:
    recorder = Recorder()
    parsed = threading.Event()  # the head of the request behind has been parsed

    def shed(method: str, target: bytes) -> bool:
        if target == b"/other":
            parsed.set()
        return False

    with (
        serve_in_thread(recorder, express=recorder.hook, shed=shed) as port,
        connect(port) as sock,
    ):
        recorder.hold = True
        sock.sendall(_post(b"/express", b"1"))
        assert recorder.held.wait(WAIT)
        sock.sendall(_post(b"/other", b"22"))
        assert parsed.wait(WAIT)
        # Parsed, and queued behind the express request: its app has not been called.
        assert not recorder.asgi_entered.is_set()
        recorder.release()
        answers = read_responses(sock, 2)
        assert [a[2]["via"] for a in answers] == ["express", "asgi"]


def test_connection_close_and_http_1_0_close_after_the_answer() -> None:
    recorder = Recorder()
    with serve_in_thread(recorder, express=recorder.hook) as port:
        with connect(port) as sock:
            sock.sendall(_post(b"/express", b"abc", b"Connection: close\r\n"))
            ((status, headers, body),) = read_responses(sock, 1)
            assert status == 200 and body["via"] == "express"
            assert headers["connection"] == "close"
            assert closed_by_server(sock)
        with connect(port) as sock:
            sock.sendall(b"POST /express HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")
            ((status, headers, body),) = read_responses(sock, 1)
            assert status == 200 and body["via"] == "express"
            assert headers["connection"] == "close"
            assert closed_by_server(sock)
        assert len(recorder.express_seen) == 2


def test_expect_100_continue_goes_through_the_asgi_app() -> None:
    recorder = Recorder()
    with serve_in_thread(recorder, express=recorder.hook) as port, connect(port) as sock:
        sock.sendall(_post(b"/express", b"abc", b"Expect: 100-continue\r\n"))
        data = b""
        while b"200 OK" not in data or not data.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        assert b'"via": "asgi"' in data and recorder.express_seen == []


def test_a_failing_handler_answers_500_and_the_connection_serves_on() -> None:
    recorder = Recorder()
    recorder.fail = True
    refusals: list[str] = []
    with (
        serve_in_thread(recorder, express=recorder.hook, on_refusal=refusals.append) as port,
        connect(port) as sock,
    ):
        sock.sendall(_post(b"/express", b"abc"))
        ((status, headers, body),) = read_responses(sock, 1)
        assert status == 500 and body["reason"] == "internal_error"
        assert body["request_id"] == headers["x-request-id"]
        assert refusals == ["internal_error"]
        recorder.fail = False
        sock.sendall(_post(b"/express", b"abc"))
        assert read_responses(sock, 1)[0][2]["via"] == "express"


def test_a_client_gone_before_its_answer_gets_nothing_and_breaks_nothing() -> None:
    recorder = Recorder()
    closed = threading.Event()
    with serve_in_thread(recorder, express=recorder.hook, on_close=closed.set) as port:
        recorder.hold = True
        with connect(port) as sock:
            sock.sendall(_post(b"/express", b"abc"))
            assert recorder.held.wait(WAIT)
        # Released once the server has seen the connection go: the answer has nowhere to go.
        assert closed.wait(WAIT)
        recorder.release()
        assert recorder.finished.wait(WAIT)
        with connect(port) as sock:
            sock.sendall(_post(b"/express", b"abc"))
            assert read_responses(sock, 1)[0][2]["via"] == "express"


def test_many_requests_on_one_connection_leave_no_cycles_behind() -> None:
    recorder = Recorder()
    with serve_in_thread(recorder, express=recorder.hook) as port, connect(port) as sock:
        for _ in range(200):
            sock.sendall(_post(b"/express", b"abc"))
            assert read_responses(sock, 1)[0][2]["via"] == "express"
        recorder.express_seen.clear()
        gc.collect()
        # The connection's current cycle, and at most the one before it, are still held.
        assert sum(type(o) is ExpressCycle for o in gc.get_objects()) <= 2
