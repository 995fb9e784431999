"""A uvicorn server with the service's connection layer and a test's own ASGI app, run in a
thread of the test process on a port of its own; for tests that need an app the service
does not have (a streaming answer, a handler that holds up the event loop)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from service.edge.connection import ConnectionLimits, guarded_protocol
from tests.service.helpers.raw_http import WAIT


@contextmanager
def serve_in_thread(
    app: Any, connection_limits: ConnectionLimits | None = None, **limits: Any
) -> Iterator[int]:
    """Serve ``app`` (``ConnectionLimits`` from ``limits`` over roomy defaults, and
    ``keep_alive_seconds``, uvicorn's keep-alive timeout); the port. With
    ``connection_limits`` (the service's own app and limits, ``service.server``), the app's
    lifespan runs too."""
    keep_alive = limits.pop("keep_alive_seconds", 60)
    settings = {
        "max_connections": 64,
        "max_header_bytes": 8192,
        "max_header_count": 64,
        "header_timeout_seconds": 60.0,
        **limits,
    }
    config = uvicorn.Config(
        app,
        lifespan="off" if connection_limits is None else "on",
        log_config=None,
        access_log=False,
        timeout_keep_alive=keep_alive,
        http=guarded_protocol(connection_limits or ConnectionLimits(**settings)),
    )
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the test server did not start"
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(WAIT)
