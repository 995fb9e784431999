"""Structured logging with a request id on every line.

The request id lives in a context variable that the request middleware sets,
so any logger called while serving a request tags its record without being
handed the id. ``configure_logging`` is called by the CLI, never at import.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import sys
import time
from contextvars import ContextVar
from typing import Any

import orjson

_request_id: ContextVar[str | None] = ContextVar("qusec_request_id", default=None)

# A client may send its own id (to correlate with its logs); anything else is replaced.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "color_message"}
)


def current_request_id() -> str | None:
    return _request_id.get()


def new_request_id(client_value: str | None) -> str:
    if client_value and _CLIENT_ID.fullmatch(client_value):
        return client_value
    # Not uuid4: os.urandom releases the GIL, and under load reacquiring it costs more
    # than the id is worth. Ids need to be unique, not unpredictable.
    return f"{random.getrandbits(96):024x}"


def bind_request_id(request_id: str | None) -> None:
    """Set the id for the current context (the request's task)."""
    _request_id.set(request_id)


class RequestIdFilter(logging.Filter):
    def __init__(self, fields: dict[str, object] | None = None) -> None:
        super().__init__()
        self.fields = dict(fields or {})

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        for key, value in self.fields.items():
            setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = vars(record)
        for key in fields.keys() - _STANDARD_ATTRS:
            if fields[key] is not None:
                entry[key] = fields[key]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        try:  # orjson: a line per request is written on the event loop
            return orjson.dumps(entry, default=str).decode()
        except TypeError:  # what it refuses (a dict with keys that are not strings, ...)
            return json.dumps(entry, default=str)


def iso_time(created: float) -> str:
    """``datetime.isoformat(timespec="milliseconds")`` in UTC, for a fraction of its cost."""
    whole = int(created)
    micros = round((created - whole) * 1e6)  # as datetime.fromtimestamp rounds
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    global _last_second
    second, stamp = _last_second  # one tuple: threads may log at once
    if second != whole:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _last_second = (whole, stamp)
    return f"{stamp}.{micros // 1000:03d}+00:00"


# The second ``iso_time`` last formatted, and its text: most lines share their second.
_last_second: tuple[int, str] = (-1, "")


class LoopBatchedStreamHandler(logging.StreamHandler):
    """A stream handler whose lines, when emitted on a thread running an event loop, are
    written together once per turn of that loop; elsewhere each line is written at once.

    A serving process logs a line per request on its event loop; written one by one, each
    line is a write system call, during which the interpreter lock goes to the inference
    thread and must be won back. Measured here (docs/service.md), that cost several times
    the formatting of the line. Batched, a busy loop writes its lines in one call per turn,
    and an idle one as soon as the line's callback has run. A process killed outright
    (SIGKILL) loses at most the lines of the turn it was killed in; ``flush`` (and so
    ``logging.shutdown``, at exit) writes whatever is pending."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._add(line)  # under the handler's lock (Handler.handle)

    def write_line(self, line: str) -> None:
        """Write one formatted line as ``emit`` writes a record's (``AccessLog``)."""
        with self.lock:  # type: ignore[union-attr]
            self._add(line + self.terminator)

    def _add(self, line: str) -> None:
        self._pending.append(line)
        loop = asyncio._get_running_loop()
        if loop is None or loop.is_closed():
            self._write_pending()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush_turn)

    def _flush_turn(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._scheduled = False
            self._write_pending()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        text, self._pending = "".join(self._pending), []
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": text}))

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
            super().flush()


class AccessLog:
    """Writes each request's access line through ``logger``.

    Every request writes one, on the event loop. Through ``logging`` (a record, the
    logger hierarchy, the handler's filter and formatter) that cost about 14 us a line
    here, hot, and three times that between requests. When the process logs JSON
    through ``configure_logging``'s handler alone, the line is built directly, the same
    fields as ``JsonFormatter`` writes for the record, in a third of that; with any other
    handler, filter or format in the way (a test capturing logs, the text format), it goes
    through ``logging`` as before. ``tests/service/test_logs.py`` compares both lines.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def write(self, level: int, method: str, path: str, status: int, seconds: float) -> None:
        logger = self.logger
        if not logger.isEnabledFor(level):
            return
        duration = round(seconds, 6)
        handler = _direct_json_handler(logger, level)
        if handler is None:
            extra = {"status": status, "duration_seconds": duration}
            logger.log(level, "%s %s %d", method, path, status, extra=extra)
            return
        entry: dict[str, Any] = {
            "time": iso_time(time.time()),
            "level": logging.getLevelName(level).lower(),
            "logger": logger.name,
            "message": f"{method} {path} {status}",
        }
        request_id = _request_id.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in handler.request_filter.fields.items():
            if value is not None:
                entry[key] = value
        entry["status"] = status
        entry["duration_seconds"] = duration
        handler.write_line(orjson.dumps(entry, default=str).decode())


class _JsonHandler(LoopBatchedStreamHandler):
    """``configure_logging``'s handler when it writes JSON: its one filter and formatter
    are a ``RequestIdFilter`` and a ``JsonFormatter``."""

    request_filter: RequestIdFilter


def _direct_json_handler(logger: logging.Logger, level: int) -> _JsonHandler | None:
    """The handler ``logger``'s record at ``level`` would reach, when it is the only one,
    is ``configure_logging``'s JSON handler as configured, and nothing on the way filters."""
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        if current.handlers:
            if current is not logging.root or len(current.handlers) != 1:
                return None
            handler = current.handlers[0]
            if (
                type(handler) is not _JsonHandler
                or level < handler.level
                or handler.filters != [handler.request_filter]
                or type(handler.formatter) is not JsonFormatter
            ):
                return None
            return handler
        if not current.propagate:
            return None
        current = current.parent  # type: ignore[assignment]
    return None


def flush_logs() -> None:
    """Write every line the root logger's handlers still hold (``LoopBatchedStreamHandler``)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def configure_logging(
    level: str = "info", fmt: str = "json", fields: dict[str, object] | None = None
) -> None:
    """Route the service's and uvicorn's loggers to one stderr handler.

    ``fields`` go on every line (a supervised worker adds its index)."""
    request_filter = RequestIdFilter(fields)
    if fmt == "json":
        handler: LoopBatchedStreamHandler = _JsonHandler(sys.stderr)
        handler.request_filter = request_filter  # type: ignore[attr-defined]
        handler.setFormatter(JsonFormatter())
    else:
        handler = LoopBatchedStreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    handler.addFilter(request_filter)
    # No line writes the caller's file and line, thread or process (the request id is what
    # ties lines together), so the records skip collecting them: the logging HOWTO's
    # "Optimization" settings; the access log runs on every request.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
