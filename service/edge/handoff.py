"""Connections handed by the supervisor to the worker that holds the fewest.

On a shared listening socket each worker accepts for itself, and the one whose event loop
wakes first takes every connection waiting. Sixteen keep-alive connections opened at once
came out anywhere from 8/8 to 15/1 over two workers (docs/service.md); a worker holding 15
has one inference thread, on one core, for nearly all the work, and the pair served 1,674
requests a second instead of 2,300 to 2,500. So under ``QUSEC_CONNECTION_BALANCING=least``
(the default) the supervisor alone accepts, and hands each connection, as a descriptor over
a Unix socket (``SCM_RIGHTS``), to the worker with the fewest open: those it handed that
worker minus those the worker has closed since, which the worker counts in memory both
processes share. Equal counts take turns. (Node's cluster module shares connections out
from its primary process for the same reason, in turns.)

A connection costs one more hop (the supervisor's accept and send, the worker's receive),
once per connection, not per request. Nothing else changes: each worker serves what it is
handed exactly as what it accepted itself (its own limits, ``service.edge.connection``).

``Dispatcher`` is the supervisor's half, a thread; ``Receiver`` the worker's, on its event
loop. ``lane`` makes one worker's pair of them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from typing import Any

log = logging.getLogger("service.handoff")

# How long the dispatcher waits for a worker to take a connection when every worker's
# channel is full, before it looks again (at its lanes, and whether it should stop).
_FULL_WAIT_SECONDS = 0.1


@dataclass
class Lane:
    """The supervisor's end of one worker's channel."""

    index: int
    channel: socket.socket
    closed: Any  # the worker's count of closed connections (a shared c_longlong)
    handed: int = 0

    @property
    def open(self) -> int:
        return self.handed - self.closed.value


@dataclass
class WorkerEnd:
    """The worker's end: passed to the worker process when it is spawned."""

    channel: socket.socket
    closed: Any


def lane(context: BaseContext, index: int) -> tuple[Lane, WorkerEnd]:
    """A new channel for worker ``index`` (each start of a worker gets its own)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    closed = context.RawValue("q", 0)
    return Lane(index, ours, closed), WorkerEnd(theirs, closed)


@dataclass
class Dispatcher:
    """Accepts on ``listener`` and hands each connection to the open lane holding the
    fewest; with no lane open it accepts nothing (connections wait in the backlog)."""

    listener: socket.socket
    lanes: dict[int, Lane] = field(default_factory=dict, init=False)
    # The index after the one handed to last: first among equals.
    _turn: int = field(default=0, init=False)
    _changed: threading.Condition = field(default_factory=threading.Condition, init=False)
    _stopping: bool = field(default=False, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self.listener.setblocking(False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="handoff", daemon=True)
        self._thread.start()

    def open_lane(self, lane: Lane) -> None:
        """Start handing connections to ``lane``'s worker (it has started serving)."""
        with self._changed:
            self.lanes[lane.index] = lane
            self._changed.notify_all()

    def close_lane(self, index: int) -> None:
        """Stop handing connections to worker ``index`` (it died or is stopping)."""
        with self._changed:
            gone = self.lanes.pop(index, None)
        if gone is not None:
            gone.channel.close()

    def stop(self) -> None:
        """Accept no more; returns once the thread has finished (again: at once)."""
        with self._changed:
            if self._stopping:
                return
            self._stopping = True
            self._changed.notify_all()
        self._wake_write.send(b"\0")
        if self._thread is not None:
            self._thread.join()
        for index in list(self.lanes):
            self.close_lane(index)
        self._wake_read.close()
        self._wake_write.close()

    def open_counts(self) -> dict[int, int]:
        """Each open lane's connections handed and not yet closed."""
        with self._changed:
            return {index: lane.open for index, lane in self.lanes.items()}

    # --- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.listener, selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)
            while self._wait_for_a_lane():
                selector.select()
                if self._stopping:
                    return
                try:
                    self._accept_waiting()
                except Exception:  # never the end of accepting: nothing else would accept
                    log.exception("handing a connection over failed")
                    self._pause()

    def _wait_for_a_lane(self) -> bool:
        with self._changed:
            while not self.lanes and not self._stopping:
                self._changed.wait()
            return not self._stopping

    def _accept_waiting(self) -> None:
        while not self._stopping:
            try:
                connection, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: the backlog keeps the rest
                log.error("could not accept a connection: %s", exc)
                self._pause()
                return
            with connection:
                self._hand(connection)

    def _hand(self, connection: socket.socket) -> None:
        """Hand ``connection`` to the least-loaded worker that takes it; waits while every
        channel is full; closes it only when no worker is left or the service stops."""
        while not self._stopping:
            for chosen in self._by_load():
                chosen.handed += 1  # counted before it can arrive (and close)
                try:
                    socket.send_fds(chosen.channel, [b"c"], [connection.fileno()])
                except (BlockingIOError, InterruptedError):
                    chosen.handed -= 1
                    continue  # its channel is full: the next least loaded
                except OSError as exc:  # the worker is gone
                    chosen.handed -= 1
                    log.warning("worker %d no longer takes connections: %s", chosen.index, exc)
                    self.close_lane(chosen.index)
                    continue
                self._turn = chosen.index + 1
                return
            if not self._wait_for_room():
                return

    def _by_load(self) -> list[Lane]:
        with self._changed:
            lanes = list(self.lanes.values())
        # Among equals, the lanes from the turn on come first, then the rest, by index.
        return sorted(lanes, key=lambda lane: (lane.open, lane.index < self._turn, lane.index))

    def _wait_for_room(self) -> bool:
        """Until some channel can take a descriptor (or a while); False with none left."""
        with self._changed:
            channels = [lane.channel for lane in self.lanes.values()]
        if not channels:
            return self._wait_for_a_lane()
        with selectors.DefaultSelector() as selector:
            for channel in channels:
                selector.register(channel, selectors.EVENT_WRITE)
            selector.register(self._wake_read, selectors.EVENT_READ)
            selector.select(_FULL_WAIT_SECONDS)
        return not self._stopping

    def _pause(self) -> None:
        with self._changed:
            self._changed.wait(_FULL_WAIT_SECONDS)


class Receiver:
    """The worker's end on its event loop: makes each handed connection a connection of
    ``protocol_factory``, and counts those that close (``connection_closed``)."""

    def __init__(self, end: WorkerEnd) -> None:
        self.channel = end.channel
        self.closed = end.closed
        self.channel.setblocking(False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._protocol_factory: Callable[[], asyncio.Protocol] | None = None
        self._tasks: set[asyncio.Task] = set()

    def start(self, protocol_factory: Callable[[], asyncio.Protocol]) -> None:
        self._loop = asyncio.get_running_loop()
        self._protocol_factory = protocol_factory
        self._loop.add_reader(self.channel.fileno(), self._receive)

    def stop(self) -> None:
        """Take no more connections (those already made are served on)."""
        if self._loop is not None and self.channel.fileno() >= 0:
            self._loop.remove_reader(self.channel.fileno())
        self.channel.close()

    def connection_closed(self) -> None:
        """One handed connection has closed (the protocol's ``connection_lost``)."""
        self.closed.value += 1

    def _receive(self) -> None:
        while True:
            try:
                message, descriptors, _, _ = socket.recv_fds(self.channel, 1, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error("connection handoff channel failed: %s", exc)
                self.stop()
                return
            if not message:  # the supervisor is gone; nothing more will come
                self.stop()
                return
            for extra in descriptors[1:]:  # never sent; never kept
                os.close(extra)
            if descriptors:
                self._serve(socket.socket(fileno=descriptors[0]))

    def _serve(self, connection: socket.socket) -> None:
        task = self._loop.create_task(self._connect(connection))  # type: ignore[union-attr]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, connection: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(  # type: ignore[union-attr]
                self._protocol_factory,  # type: ignore[arg-type]
                connection,
            )
        except (OSError, ValueError) as exc:  # reset before it was served, say
            log.debug("a handed connection could not be served: %s", exc)
            connection.close()
            self.connection_closed()
