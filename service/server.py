"""One serving process: the app under uvicorn, with the connection layer's limits.

``serve`` is what ``qusec-serve`` runs (``service.cli``), and what each of a
supervisor's workers runs on the supervisor's socket (``service.supervisor``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
from collections.abc import Callable, Iterator

import uvicorn

from service.edge.connection import ConnectionLimits, guarded_protocol
from service.edge.handoff import Receiver, WorkerEnd
from service.logs import flush_logs
from service.settings import ServiceSettings

log = logging.getLogger("service")


def serve(
    settings: ServiceSettings,
    sockets: list[socket.socket] | None = None,
    on_started: Callable[[], None] | None = None,
    handoff: WorkerEnd | None = None,
) -> int:
    """Run one serving process until it is told to stop: 0, or 3 when startup failed.

    ``sockets``: already bound (a supervisor's workers share one); ``handoff``: serve the
    connections a supervisor hands over instead (``service.edge.handoff``); with neither,
    it binds its own.
    """
    from service.app import create_app  # after logging is configured, so import logs are seen

    app = create_app(settings)
    receiver = Receiver(handoff) if handoff is not None else None
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,  # the service logs its own access lines, with request ids
        lifespan="on",
        timeout_graceful_shutdown=int(settings.graceful_shutdown_seconds),
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
        server_header=False,
        http=guarded_protocol(connection_limits(settings, app, receiver)),
    )
    ensure_file_descriptors(settings.max_connections)
    server = _Server(config, on_started, receiver)
    server.run(sockets=[] if receiver is not None else sockets)
    # uvicorn leaves started=False when startup failed (bad checkpoint, port in use).
    return 0 if server.started else 3


class _Server(uvicorn.Server):
    """uvicorn's server, telling ``on_started`` once the app has started and it listens,
    and writing the log lines still pending for the loop's turn before uvicorn re-raises
    the signal that stopped it (which ends the process with no chance to write them).
    With a ``receiver`` it listens on no socket of its own: it serves the connections
    handed to it, and stops taking them when it starts to shut down."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                flush_logs()

    def __init__(
        self,
        config: uvicorn.Config,
        on_started: Callable[[], None] | None,
        receiver: Receiver | None = None,
    ) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._receiver = receiver

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._receiver is not None and self.started:
            self._receiver.start(self._protocol)
        if self.started and self._on_started is not None:
            self._on_started()

    def _protocol(self) -> asyncio.Protocol:
        """A connection's protocol, as uvicorn's ``startup`` makes one for its servers."""
        config = self.config
        return config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=self.server_state, app_state=self.lifespan.state
        )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._receiver is not None:
            self._receiver.stop()
        await super().shutdown(sockets)


def connection_limits(
    settings: ServiceSettings, app, receiver: Receiver | None = None
) -> ConnectionLimits:
    metrics = app.state.metrics
    opened, closed = metrics.open_connections.inc, metrics.open_connections.dec
    if receiver is not None:

        def on_close() -> None:
            closed()
            receiver.connection_closed()

    else:
        on_close = closed
    return ConnectionLimits(
        max_connections=settings.max_connections,
        max_header_bytes=settings.max_header_bytes,
        max_header_count=settings.max_header_count,
        header_timeout_seconds=settings.request_header_timeout_seconds,
        retry_after_seconds=settings.retry_after_seconds,
        max_connections_per_client=settings.max_connections_per_client,
        linger_seconds=settings.linger_seconds,
        linger_max_bytes=settings.linger_max_bytes,
        on_refusal=lambda reason: metrics.rejections.labels(reason=reason).inc(),
        shed=lambda method, target: (
            method == "POST" and pool_overloaded(app) and is_inference(target)
        ),
        on_open=opened,
        on_close=on_close,
        express=app.express or (lambda method, target, headers: None),
    )


def pool_overloaded(app) -> bool:
    """Shed from 7/8 of the in-flight limit on: requests whose heads arrive in one burst all
    pass this check before any of them is admitted, and the slack keeps them from being
    refused later, after their bodies were read, on the app's much dearer path."""
    pool = app.state.pool
    return pool is not None and pool.in_flight.count * 8 >= pool.settings.max_in_flight * 7


def is_inference(target: bytes) -> bool:
    """/classify and /v2/models/{name}/infer: the routes the in-flight limit admits."""
    path = target.split(b"?", 1)[0]
    return path == b"/classify" or (path.startswith(b"/v2/models/") and path.endswith(b"/infer"))


# Files the process needs besides its connections: models, logs, the job database, pipes
# to the decode and job processes, a connection accepted only to be refused.
SPARE_FILE_DESCRIPTORS = 256


def ensure_file_descriptors(max_connections: int) -> None:
    """Raise the soft descriptor limit so the connection cap, not the kernel, binds first."""
    wanted = max_connections + SPARE_FILE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        soft = new_soft
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "descriptor limit %d is below QUSEC_MAX_CONNECTIONS + %d; lower QUSEC_MAX_CONNECTIONS",
            soft,
            SPARE_FILE_DESCRIPTORS,
        )
