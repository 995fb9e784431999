"""Log lines emitted on an event loop are written once per turn of the loop, in order; lines
emitted anywhere else are written at once; nothing pending is lost on ``flush``."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import pytest

from service.logs import (
    AccessLog,
    JsonFormatter,
    LoopBatchedStreamHandler,
    bind_request_id,
    configure_logging,
)


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


@pytest.fixture
def configured():
    """The process's logging as ``configure_logging`` sets it (JSON, a worker's field),
    writing into a ``_Stream``; the root logger is restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("info", "json", fields={"worker": 1})
    stream = _Stream()
    root.handlers[0].setStream(stream)
    yield stream
    root.handlers[:], root.level = saved[0], saved[1]


def _access_line(access: AccessLog, status: int) -> None:
    access.write(logging.INFO, "POST", "/classify", status, 0.0123456789)
    logging.getLogger().handlers[0].flush()


def test_an_access_line_written_directly_is_the_line_logging_writes(configured, monkeypatch):
    stream = configured
    root = logging.getLogger()
    # pytest adds its own capturing handlers to the root logger for each test: off here.
    monkeypatch.setattr(root, "handlers", [root.handlers[0]])
    access = AccessLog(logging.getLogger("service.access"))
    bind_request_id("req-1")
    # Through logging: a filter on the logger takes the line off the direct path.
    access.logger.addFilter(lambda record: True)
    try:
        _access_line(access, 200)
    finally:
        access.logger.filters.clear()
    # Directly: logging's own path would raise here.
    with monkeypatch.context() as patched:
        patched.setattr(logging.Logger, "log", lambda *a, **k: pytest.fail("went through logging"))
        _access_line(access, 200)
    through_logging, direct = (json.loads(line) for line in "".join(stream.writes).splitlines())
    assert through_logging.pop("time")[:4] == direct.pop("time")[:4]
    assert direct == through_logging
    assert direct == {
        "level": "info",
        "logger": "service.access",
        "message": "POST /classify 200",
        "request_id": "req-1",
        "worker": 1,
        "status": 200,
        "duration_seconds": 0.012346,
    }


def test_access_lines_go_through_logging_when_anything_else_would_see_them(
    configured, caplog
) -> None:
    access = AccessLog(logging.getLogger("service.access"))
    with caplog.at_level(logging.INFO):  # a second handler on the root logger
        _access_line(access, 404)
    assert [r.getMessage() for r in caplog.records] == ["POST /classify 404"]
    assert caplog.records[0].status == 404
    logging.getLogger().setLevel(logging.WARNING)
    _access_line(access, 500)  # below the level: no line at all
    assert "".join(configured.writes).count("POST /classify") == 1  # caplog's line only
