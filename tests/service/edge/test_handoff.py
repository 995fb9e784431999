"""The supervisor's connection handoff (``service.edge.handoff``), in one process.

Real sockets throughout: a listening TCP socket the ``Dispatcher`` accepts on, real client
connections, real ``SCM_RIGHTS`` channels. A "worker" here is the test reading descriptors
off a lane's other end (or a ``Receiver`` on an event loop serving them). Each test waits
on what arrives, with a generous limit, never on time alone.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import select
import socket
import threading
from collections.abc import Iterator

import pytest

from service.edge.handoff import Dispatcher, Lane, Receiver, WorkerEnd, lane

LONG = 60.0  # seconds: only a broken handoff waits this long
CONTEXT = multiprocessing.get_context("spawn")


_opened: list[socket.socket] = []


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock
    sock.close()
    while _opened:
        _opened.pop().close()


@pytest.fixture
def dispatcher(listener) -> Iterator[Dispatcher]:
    dispatcher = Dispatcher(listener)
    dispatcher.start()
    yield dispatcher
    dispatcher.stop()


def connect(listener: socket.socket) -> socket.socket:
    """A client connection, closed when the test ends."""
    client = socket.create_connection(listener.getsockname(), timeout=LONG)
    _opened.append(client)
    return client


def take(end: WorkerEnd) -> socket.socket:
    """The next connection handed to ``end``'s worker (fails after ``LONG``)."""
    ready, _, _ = select.select([end.channel], [], [], LONG)
    assert ready, "no connection was handed over"
    message, descriptors, _, _ = socket.recv_fds(end.channel, 1, 4)
    assert message == b"c" and len(descriptors) == 1
    connection = socket.socket(fileno=descriptors[0])
    _opened.append(connection)
    return connection


def nothing_waiting(end: WorkerEnd) -> bool:
    return not select.select([end.channel], [], [], 0)[0]


def peer_port(connection: socket.socket) -> int:
    return connection.getpeername()[1]


def new_lane(index: int) -> tuple[Lane, WorkerEnd]:
    """A lane whose worker end is closed when the test ends (the dispatcher closes its own)."""
    ours, end = lane(CONTEXT, index)
    _opened.append(end.channel)
    return ours, end


def two_lanes(dispatcher: Dispatcher) -> list[tuple[Lane, WorkerEnd]]:
    pairs = [new_lane(index) for index in range(2)]
    for ours, _ in pairs:
        dispatcher.open_lane(ours)
    return pairs


def test_connections_go_in_turn_while_the_workers_hold_as_many(listener, dispatcher) -> None:
    (_, first), (_, second) = two_lanes(dispatcher)
    clients, handed = [], []
    for _ in range(3):
        for end in (first, second):
            clients.append(connect(listener))
            handed.append((end, take(end)))
    # Each worker got the connection made just before it took one: 0, 1, 0, 1, 0, 1.
    assert [peer_port(c) for _, c in handed] == [c.getsockname()[1] for c in clients]
    assert nothing_waiting(first) and nothing_waiting(second)
    assert dispatcher.open_counts() == {0: 3, 1: 3}


def test_a_worker_whose_connections_closed_gets_the_next_ones(listener, dispatcher) -> None:
    (_, first), (_, second) = two_lanes(dispatcher)
    for _ in range(2):
        for end in (first, second):
            connect(listener)
            take(end)
    first.closed.value += 2  # both of worker 0's connections closed
    assert dispatcher.open_counts() == {0: 0, 1: 2}
    connect(listener)
    take(first)
    connect(listener)
    take(first)
    connect(listener)
    take(second)  # 2 and 2 again: in turn, worker 1 next
    assert dispatcher.open_counts() == {0: 2, 1: 3}


def test_turns_go_round_the_lanes_that_are_left(listener, dispatcher) -> None:
    """With worker 2's lane gone, equal counts still take turns: 0, 1, 3, then 0 again."""
    ends = {}
    for index in (0, 1, 3):
        ours, ends[index] = new_lane(index)
        dispatcher.open_lane(ours)
    for index in (0, 1, 3):
        connect(listener)
        take(ends[index])
    for end in ends.values():
        end.closed.value += 1  # every connection closed: all equal again, at none
    connect(listener)
    take(ends[0])
    assert dispatcher.open_counts() == {0: 1, 1: 0, 3: 0}


def test_connections_made_before_any_worker_serves_wait_for_one(listener, dispatcher) -> None:
    early = [connect(listener) for _ in range(3)]
    ours, end = new_lane(0)
    dispatcher.open_lane(ours)
    handed = sorted(peer_port(take(end)) for _ in early)
    assert handed == sorted(c.getsockname()[1] for c in early)


def test_a_dead_workers_lane_is_dropped_and_its_share_goes_elsewhere(listener, dispatcher):
    (_, first), (_, second) = two_lanes(dispatcher)
    first.channel.close()  # the worker died: its end of the channel closed with it
    for _ in range(3):
        client = connect(listener)
        assert peer_port(take(second)) == client.getsockname()[1]
    assert dispatcher.open_counts() == {1: 3}


def test_a_worker_that_takes_nothing_more_is_passed_over(listener, dispatcher) -> None:
    (full, _), (_, second) = two_lanes(dispatcher)
    second.closed.value -= 1000  # as if worker 1 held a thousand: worker 0 is the one to take
    while True:  # fill worker 0's channel, as a worker that stopped reading would leave it
        try:
            full.channel.send(b"x")
        except BlockingIOError:
            break
    client = connect(listener)
    assert peer_port(take(second)) == client.getsockname()[1]


def test_stop_ends_the_thread_and_closes_the_lanes(listener) -> None:
    dispatcher = Dispatcher(listener)
    dispatcher.start()
    ours, end = new_lane(0)
    dispatcher.open_lane(ours)
    dispatcher.stop()
    dispatcher.stop()  # a second stop is harmless
    assert ours.channel.fileno() == -1
    assert end.channel.recv(1) == b""  # the worker sees the channel end
    connect(listener)  # still queued in the backlog: nobody accepts it any more
    assert not any(t.name == "handoff" and t.is_alive() for t in threading.enumerate())


class _Echo(asyncio.Protocol):
    """Echoes what arrives, and tells the receiver when its connection closes."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.receiver.connection_closed()


def test_the_receiver_serves_handed_connections_and_counts_them_closed(listener):
    dispatcher = Dispatcher(listener)
    ours, end = new_lane(0)
    receiver = Receiver(end)

    async def serve_two() -> None:
        receiver.start(lambda: _Echo(receiver))
        dispatcher.open_lane(ours)
        dispatcher.start()
        for text in (b"one", b"two"):
            reader, writer = await asyncio.open_connection(*listener.getsockname())
            writer.write(text)
            assert await asyncio.wait_for(reader.readexactly(len(text)), LONG) == text
            writer.close()
            await writer.wait_closed()
        while ours.open:  # until the receiver has seen both close
            await asyncio.sleep(0.01)
        receiver.stop()

    try:
        asyncio.run(asyncio.wait_for(serve_two(), LONG))
    finally:
        dispatcher.stop()
    assert (ours.handed, end.closed.value) == (2, 2)
