"""Log lines emitted on an event loop are written once per turn of the loop, in order; lines
emitted anywhere else are written at once; nothing pending is lost on ``flush``."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import pytest

from service.logs import JsonFormatter, LoopBatchedStreamHandler


class _Stream:
    """Records each write: what a batched handler writes together arrives in one call."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


@pytest.fixture
def logged():
    stream = _Stream()
    handler = LoopBatchedStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.batched")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger, handler, stream
    logger.handlers[:] = []


def _messages(text: str) -> list[str]:
    return [json.loads(line)["message"] for line in text.splitlines()]


def test_lines_of_one_loop_turn_are_written_together_after_it(logged) -> None:
    logger, _, stream = logged

    async def main() -> list[str]:
        for index in range(5):
            logger.info("line %d", index)
        before = list(stream.writes)  # the turn that logged them has not ended yet
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return before

    assert asyncio.run(main()) == []
    assert len(stream.writes) == 1
    assert _messages(stream.writes[0]) == [f"line {index}" for index in range(5)]


def test_lines_outside_a_loop_are_written_at_once(logged) -> None:
    logger, _, stream = logged
    logger.info("no loop here")
    assert _messages("".join(stream.writes)) == ["no loop here"]
    thread = threading.Thread(target=logger.info, args=("another thread",))
    thread.start()
    thread.join()
    assert _messages("".join(stream.writes)) == ["no loop here", "another thread"]


def test_flush_writes_what_is_pending(logged) -> None:
    logger, handler, stream = logged

    async def main() -> None:
        logger.info("pending")
        handler.flush()  # as logging.shutdown does at exit
        assert _messages("".join(stream.writes)) == ["pending"]

    asyncio.run(main())
    assert _messages("".join(stream.writes)) == ["pending"]  # written once, not twice
