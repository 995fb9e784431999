"""The HTTP/1.1 connection layer: uvicorn's httptools protocol with the limits it lacks.

uvicorn (0.55, httptools) bounds none of these on its own: the size or number of
request headers (httptools buffers a header of any length), the time a connection
may take to send a complete request head (its keep-alive timer is cancelled by the
first byte, and nothing is armed before the first request), the number of open
connections (``limit_concurrency`` answers a plain-text 503 only once a request
head has arrived, so idle sockets still pile up), or what happens to a connection
answered before its request has all arrived. This subclass adds them, at the point
where the bytes arrive, and answers every refusal with the service's JSON error body:

* head bytes (request line and headers) over ``max_header_bytes``: 431
  ``headers_too_large``, before the parser sees the excess;
* more than ``max_header_count`` headers: 431 ``too_many_headers``;
* no complete request head within ``header_timeout_seconds`` of connecting or of
  the previous response: closed (408 ``request_header_timeout`` when part of a
  head had arrived, silently when nothing had), after one more read of the sockets,
  so that a head which arrived in time while the event loop was held up is served;
* more than ``max_connections_per_client`` connections from one client (source
  address): the newcomer gets 429 ``client_connection_limit``;
* a new connection beyond ``max_connections``: a connection of the client holding
  the most is closed to make room (``service.edge.clients``), one that was answered
  or is idle first, then a partial head, then a body still arriving; when none can
  go, or the only one is the newcomer's own client's upload, the newcomer gets 503
  ``too_many_connections``;
* anything the parser refuses: 400 ``bad_http_request``;
* while the service is overloaded (``shed`` says so for the request's path), an
  inference request gets the 503 ``overloaded`` answer the moment its head is parsed,
  with no request cycle, task, routing, middleware or logging (under overload refusals
  must cost next to nothing); one pipelined behind a request still being answered is
  refused through a minimal cycle instead, so that responses stay in order.

Every connection ends. A request answered before it has all arrived (an early 413, a
shed request, ``GET /healthz`` with a body) has the rest read and discarded for at most
``linger_seconds`` and ``linger_max_bytes``, then waits for the next request as any
keep-alive connection does, or closes. Refusals close lingering: the answer and a FIN
go out, then what the client still sends is discarded within the same bounds, so that
the client reads the JSON answer rather than a reset.

The wait between requests is timed here too: one lazily armed timer per connection keeps
both the header timeout and uvicorn's keep-alive timeout (``_start_waiting_for_head``),
where uvicorn would arm and cancel a timer of its own around every request.
A request the app names an express handler for (``ConnectionLimits.express``) is answered
here without a request cycle once it has all arrived (``service.edge.express``).
Everything else (pipelining, flow control, the request cycle) is uvicorn's own code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from service.edge.clients import ClientLedger, Phase
from service.edge.express import ExpressCycle, ExpressHandler, answer_bytes, internal_error
from service.edge.refusals import overloaded_app, overloaded_bytes, refusal_bytes

log = logging.getLogger(__name__)

# Refusals of a newcomer under connection pressure close at once: lingering would keep
# the descriptor that is short. Its client has had no time to send much.
_CLOSE_AT_ONCE = frozenset({"too_many_connections", "client_connection_limit"})
# How long after the head timeout the connection is looked at again (``_head_timed_out``):
# any positive delay puts one turn of reading the sockets in between.
_HEAD_RECHECK_SECONDS = 0.01


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    max_header_bytes: int
    max_header_count: int
    header_timeout_seconds: float
    retry_after_seconds: int = 1
    max_connections_per_client: int = 0  # 0: no per-client cap
    linger_seconds: float = 5.0
    linger_max_bytes: int = 16 << 20
    # Told each refusal's reason code (the service counts them in its metrics).
    on_refusal: Callable[[str], None] = lambda reason: None
    # Given a request's method and raw target, true when it should be refused as overloaded.
    shed: Callable[[str, bytes], bool] = lambda method, target: False
    clients: ClientLedger = field(default_factory=ClientLedger)
    # Told each connection as it opens and as it closes, before anything else is done.
    on_open: Callable[[], None] = lambda: None
    on_close: Callable[[], None] = lambda: None
    # Given a request's method, raw target and headers, the handler that answers it as an
    # express request (``service.edge.express``), or None for the ASGI app.
    express: Callable[[str, bytes, list], ExpressHandler | None] = lambda m, t, h: None


def request_arrived(receive: Callable[[], Any]) -> bool:
    """Whether the whole request whose ASGI ``receive`` this is has arrived: its next
    ``receive()`` then returns at once, with the rest of the body. False when that is not
    known (another server, or a test's transport), as for a body still on its way."""
    cycle = getattr(receive, "__self__", None)
    return type(cycle) is RequestResponseCycle and not cycle.more_body


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` bound to these limits."""
    attributes = {
        "limits": limits,
        "shed_app": staticmethod(overloaded_app(limits.retry_after_seconds, limits.on_refusal)),
    }
    return type("BoundGuardedHttpProtocol", (GuardedHttpProtocol,), attributes)


class _CycleTransport:
    """The transport as a request cycle sees it.

    * The response head is held back and goes out with the response's first body bytes in
      one send: uvicorn writes the two separately, and on a small answer each send costs
      about as much as the other (the kernel hands the segment to the client within the
      call). A head with no body in the same step (a HEAD request, a streaming response)
      goes out once the response completes, before the protocol writes anything of its own
      (``GuardedHttpProtocol.flush_held``), or at the end of the loop's iteration.
    * uvicorn closes the transport right after a response when the connection is not kept
      alive; when the request has not all arrived by then, the close lingers
      (``GuardedHttpProtocol.close_after_answer``).
    """

    def __init__(self, protocol: GuardedHttpProtocol, cycle: Any) -> None:
        self._protocol = protocol
        self._transport = protocol.transport
        self._cycle = cycle
        self._head_seen = False
        self.held: bytes | None = None
        self.is_closing = protocol.transport.is_closing

    def write(self, data: bytes) -> None:
        if self.held is not None:
            data, self.held = self.held + data, None
            self._protocol.holding = None
        elif not self._head_seen and self._cycle.response_started:
            # uvicorn marks the response started just before it writes the head.
            self._head_seen = True
            self.held = data
            self._protocol.holding = self
            self._protocol.loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self.held is not None:
            data, self.held = self.held, None
            self._protocol.holding = None
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._protocol.close_after_answer()

    def __getattr__(self, name: str) -> Any:
        self.flush()
        return getattr(self._transport, name)


class GuardedHttpProtocol(HttpToolsProtocol):
    limits: ConnectionLimits
    shed_app: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.awaiting_head = True  # between requests, or part-way through a request head
        self.head_bytes = 0
        self.header_count = 0
        self.heads_completed = 0
        self.idle_since = 0.0
        self.client_address = ""
        self._head_timer: Any = None
        # When the wait for a head ends, with part of one arrived or none; when the timer
        # is due (loop time).
        self._head_due = self._idle_due = self._timer_due = 0.0
        self._refusal: str | None = None
        self._shedding = False  # answered 503 without a cycle; discarding the body
        self._finishing = False  # answered; discarding the rest of the request
        self._lingering = False  # refused or closing: FIN sent, discarding until the close
        self._discard_left = 0
        self._linger_timer: Any = None
        self.holding: _CycleTransport | None = None  # whose response head is held back

    # --- connections ----------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        self.limits.on_open()
        super().connection_made(transport)
        self.client_address = self.client[0] if self.client else ""
        self.idle_since = self.loop.time()
        held = self.limits.clients.opened(self)
        cap = self.limits.max_connections_per_client
        if cap and held > cap:
            self.refuse("client_connection_limit")
            return
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            self.refuse("too_many_connections")
            return
        self._start_waiting_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self.limits.on_close()
        self._cancel_head_timer()
        self._cancel_linger_timer()
        self.limits.clients.closed(self)
        super().connection_lost(exc)

    def phase(self) -> Phase | None:
        """Where this connection stands, for the ledger's choice; None while it is served."""
        if self.transport.is_closing():
            return None
        if self._finishing or self._lingering or self._shedding:
            return Phase.ANSWERED
        if self.pipeline:
            return None
        idle = self.cycle is None or self.cycle.response_complete
        if self.awaiting_head:
            return (Phase.PARTIAL_HEAD if self.head_bytes else Phase.IDLE) if idle else None
        if self.cycle is not None and not self.cycle.response_started:
            return Phase.READING_BODY
        return None

    def _make_room(self) -> bool:
        """Close a connection of the client holding the most; False when none may go."""
        victim = self.limits.clients.choose_victim(self)
        if victim is None:
            return False
        victim.evict()  # type: ignore[attr-defined]
        return True

    def evict(self) -> None:
        """Close this connection at once to make room for a new one."""
        phase = self.phase()
        log.debug("closing a connection for room (%s)", phase.name if phase else "?")
        if phase is Phase.READING_BODY:
            self.cycle.disconnected = True  # its request's task reads a disconnect, writes nothing
            self.refuse("too_many_connections")
        elif phase is Phase.PARTIAL_HEAD:
            self.refuse("request_header_timeout", linger=False)
        else:
            self._close_now()

    # --- the request head -----------------------------------------------------------------

    def _start_waiting_for_head(self, idle_seconds: float | None = None) -> None:
        """Wait for a request head: at most ``header_timeout_seconds`` from now, and, with
        nothing arrived, at most ``idle_seconds`` (the keep-alive timeout between requests).

        One timer per connection, armed lazily (``_head_timed_out``): under load a
        connection waits for a head thousands of times before any wait could expire, and
        arming and cancelling two timers for each of them (this one and uvicorn's
        keep-alive timer) cost more of the event loop than the wait's own bookkeeping."""
        self.awaiting_head = True
        self.head_bytes = 0
        self.header_count = 0
        self.idle_since = now = self.loop.time()
        limit = self.limits.header_timeout_seconds
        self._head_due = now + limit
        self._idle_due = now + min(limit, idle_seconds) if idle_seconds else self._head_due
        if self._head_timer is None or self._idle_due < self._timer_due:
            self._arm_head_timer(self._idle_due)

    def _arm_head_timer(self, when: float, *args: Any) -> None:
        self._cancel_head_timer()
        self._timer_due = when
        self._head_timer = self.loop.call_at(when, self._head_timed_out, *args)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self, looked_again: bool = False) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._lingering:
            return
        now = self.loop.time()
        busy = self.cycle is not None and not self.cycle.response_complete
        if not self.awaiting_head or busy:
            # Served meanwhile: the timer goes on, for whichever wait comes next.
            self._arm_head_timer(now + self.limits.header_timeout_seconds)
            return
        due = self._head_due if self.head_bytes else self._idle_due
        if now < due:  # a later wait than the one the timer was armed for
            self._arm_head_timer(due)
            return
        if not looked_again:
            # libuv runs expired timers before it reads the sockets: after the loop was
            # held up past the deadline, a head that arrived in time may be waiting
            # unread. One more read of the sockets comes before the verdict.
            self._arm_head_timer(now + _HEAD_RECHECK_SECONDS, True)
            return
        if self.head_bytes > 0:
            self.refuse("request_header_timeout")
        else:
            self._close_now()

    def data_received(self, data: bytes) -> None:
        self._receive(data)
        cycle = self.cycle
        if type(cycle) is ExpressCycle and cycle.more_body:
            self._promote(cycle)

    def _receive(self, data: bytes) -> None:
        discarding = self._lingering or self._finishing
        if discarding and (not self._discard(len(data)) or self._lingering):
            return
        if not self.awaiting_head:
            super().data_received(data)
            return
        room = self.limits.max_header_bytes - self.head_bytes
        if len(data) <= room:
            self.head_bytes += len(data)
            super().data_received(data)
            return
        # Only part of this chunk may still be head; the parser decides where the head ends.
        self.head_bytes += room
        heads = self.heads_completed
        super().data_received(data[:room])
        if self.transport.is_closing() or self._lingering:
            return
        if self.heads_completed == heads:
            self.refuse("headers_too_large")
            return
        self._receive(data[room:])  # the rest: a body, or the next request's head

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > self.limits.max_header_count:
            self._refusal = "too_many_headers"
            raise ValueError("too many header fields")  # the parser stops; see send_400_response
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.awaiting_head = False
        self.heads_completed += 1
        self.idle_since = self.loop.time()
        cycle = self.cycle
        method = self.parser.get_method().decode("ascii", "replace")
        if not self.limits.shed(method, self.url):
            handler = self._express_handler(method)
            if handler is not None:
                http_1_0 = self.parser.get_http_version() == "1.0"
                keep_alive = self.parser.should_keep_alive() and not http_1_0
                self.cycle = ExpressCycle(handler, method, keep_alive, cycle)  # type: ignore[assignment]
                return
            super().on_headers_complete()
        elif self._free():
            self._shed_directly()
            return
        else:
            # Behind a pipelined request still being answered: in order, through a cycle.
            app, self.app = self.app, self.shed_app  # uvicorn starts the cycle with self.app
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        if self.cycle is not cycle and self.cycle is not None:
            self.cycle.transport = _CycleTransport(self, self.cycle)  # type: ignore[assignment]

    def _free(self) -> bool:
        """Whether a request whose head just arrived may be answered at once: the connection
        is not answering another, and nothing waits in the pipeline before it."""
        return (self.cycle is None or self.cycle.response_complete) and not self.pipeline

    def _express_handler(self, method: str) -> ExpressHandler | None:
        """The app's express handler for this request, when it may be one: the connection
        is free (``_free``), and the request asks for nothing the ASGI cycle would do for
        it (a ``100 Continue``, an upgrade, a root path)."""
        if (
            not self._free()
            or self.expect_100_continue
            or self.root_path
            or self.parser.should_upgrade()
        ):
            return None
        return self.limits.express(method, self.url, self.headers)

    def _promote(self, cycle: ExpressCycle) -> None:
        """The body of an express request did not all arrive with its head: it goes the
        ordinary way, through uvicorn's request cycle, with what arrived of it so far."""
        if self.transport.is_closing() or self._lingering or self.cycle is not cycle:
            return
        self.cycle = cycle.previous
        HttpToolsProtocol.on_headers_complete(self)
        self.cycle.transport = _CycleTransport(self, self.cycle)  # type: ignore[assignment]
        for chunk in cycle.chunks:
            HttpToolsProtocol.on_body(self, chunk)

    def _start_express(self, cycle: ExpressCycle) -> None:
        cycle.more_body = False
        cycle.previous = None  # only a promotion needs it; kept, each cycle would hold all before
        request = cycle.request(self.url, self.headers, self.client)
        task = self.loop.create_task(self._answer_express(cycle, request))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def _answer_express(self, cycle: ExpressCycle, request: Any) -> None:
        try:
            answer = await cycle.handler(request)
        except Exception:  # the handler answers its own errors; this is the safety net
            log.exception("express request failed")
            answer = internal_error()
            self.limits.on_refusal("internal_error")
        if self.flow.write_paused and not cycle.disconnected:
            await self.flow.drain()
        if cycle.disconnected:
            return  # as uvicorn's cycle: nothing is written to a connection that is gone
        cycle.response_started = True
        self.flush_held()
        self.transport.write(
            answer_bytes(answer, self.server_state.default_headers, not cycle.keep_alive)
        )
        cycle.response_complete = True
        if not cycle.keep_alive:
            self.close_after_answer()
        self.on_response_complete()

    def _shed_directly(self) -> None:
        """The 503 ``overloaded`` answer written at once, with no request cycle, task or app:
        the cheapest answer there is, for the moments when answering costs most. The body
        that follows is discarded as it arrives (``on_body``)."""
        self.flush_held()
        self._shedding = True
        self.transport.write(overloaded_bytes(self.limits.retry_after_seconds))
        self.limits.on_refusal("overloaded")
        # A client told to wait (Expect: 100-continue) sends no body now: the stream cannot be
        # resynchronised, so that connection closes, as one the client asked to close does.
        if not self.parser.should_keep_alive() or self.expect_100_continue:
            self.linger_close()
        else:
            self._finish_after_answer()

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is ExpressCycle:
            if cycle.more_body:
                cycle.chunks.append(body)
        elif not self._shedding:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if type(cycle) is ExpressCycle:
            if cycle.more_body:
                self._start_express(cycle)
        elif not self._shedding:
            super().on_message_complete()
        # The next bytes belong to the next request's head; its timer starts once this
        # request's response is complete (see on_response_complete).
        self.awaiting_head = True
        self.head_bytes = 0
        self.idle_since = self.loop.time()
        self._shedding = False
        if self._finishing:  # answered already: this connection is idle from here on
            self._finishing = False
            self._cancel_linger_timer()
            if not self.transport.is_closing():
                self._start_waiting_for_head(self.timeout_keep_alive)

    def on_response_complete(self) -> None:
        self.flush_held()
        # uvicorn's own steps, but for its keep-alive timer, which the head timer keeps
        # (``_start_waiting_for_head``): a lingering close must not be cut short by it.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        if self._lingering:
            return
        if self.awaiting_head:
            self._start_waiting_for_head_keeping_count()
        elif self.cycle is not None and self.cycle.response_complete:
            self._finish_after_answer()  # answered before the request had all arrived

    def _start_waiting_for_head_keeping_count(self) -> None:
        head_bytes = self.head_bytes
        self._start_waiting_for_head(self.timeout_keep_alive)
        self.head_bytes = head_bytes  # bytes of a pipelined head already counted

    def flush_held(self) -> None:
        """Write a response head the cycle's transport still holds (``_CycleTransport``)
        before anything the protocol writes or closes itself."""
        if self.holding is not None:
            self.holding.flush()

    # --- answers given before the request has all arrived ---------------------------------

    def _finish_after_answer(self) -> None:
        """Read and discard the rest of an answered request, within the linger bounds;
        ``on_message_complete`` returns the connection to keep-alive if it ends in time."""
        self._finishing = True
        self._discard_left = self.limits.linger_max_bytes
        self._arm_linger_timer()

    def close_after_answer(self) -> None:
        """Close after a response (the cycle's ``transport.close``): at once when the
        request has all arrived, lingering when some of it is still on its way."""
        if self.awaiting_head or self.transport.is_closing():
            self.transport.close()
        else:
            self.linger_close()

    def linger_close(self) -> None:
        """Close without a reset: send a FIN after what was written, then read and discard
        what the client still sends until it closes too, or the linger bounds run out."""
        self.flush_held()
        if self._lingering or self.transport.is_closing():
            return
        self._lingering = True
        self._finishing = False
        self.awaiting_head = False
        self._cancel_head_timer()
        self._unset_keepalive_if_required()
        self._discard_left = self.limits.linger_max_bytes
        if not self.transport.can_write_eof():
            self._close_now()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self._arm_linger_timer()

    def _discard(self, size: int) -> bool:
        """Count discarded bytes against the linger bound; False once it is passed (closed)."""
        self._discard_left -= size
        if self._discard_left < 0:
            self._close_now()
            return False
        return True

    def _arm_linger_timer(self) -> None:
        self._cancel_linger_timer()
        self._linger_timer = self.loop.call_later(self.limits.linger_seconds, self._close_now)

    def _cancel_linger_timer(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None

    def _close_now(self) -> None:
        self.flush_held()
        self._cancel_head_timer()
        self._cancel_linger_timer()
        self._finishing = False
        if self.transport.is_closing():
            return
        if self.transport.get_write_buffer_size():
            self.transport.abort()  # a client that does not read gets no more time
        else:
            self.transport.close()

    # --- refusals -------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:  # called by uvicorn on a parser error
        self.refuse(self._refusal or "bad_http_request")

    def refuse(self, reason: str, linger: bool | None = None) -> None:
        """Answer with the connection layer's JSON refusal and close; lingering (see
        ``linger_close``) unless the refusal is for want of connections."""
        self.flush_held()
        self._cancel_head_timer()
        self.awaiting_head = False
        if self.transport.is_closing() or self._lingering:
            return
        at_once = reason in _CLOSE_AT_ONCE
        self.transport.write(refusal_bytes(reason, self._retry_after() if at_once else None))
        self.limits.on_refusal(reason)
        log.debug("refused a connection: %s", reason, extra={"reason": reason})
        if at_once or linger is False:
            self._close_now()
        else:
            self.linger_close()

    def _retry_after(self) -> int:
        return self.limits.retry_after_seconds
