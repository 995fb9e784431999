"""``python -m service`` / ``qusec-serve``: parse arguments, build settings, run uvicorn.

Command-line options override ``QUSEC_*`` environment variables, which
override the defaults. ``--checkpoint`` may be repeated; the first one named is
the default model unless ``--default-model`` (or QUSEC_DEFAULT_MODEL) says otherwise.
With neither ``--checkpoint`` nor QUSEC_CHECKPOINTS, the bundled checkpoints are served.
"""

from __future__ import annotations

import argparse
import logging
import resource
import socket
import sys
from collections.abc import Callable

import uvicorn
from pydantic import ValidationError

from models.checkpoint import CheckpointError, read_manifest
from service.logs import configure_logging
from service.protocol import ConnectionLimits, guarded_protocol
from service.settings import ServiceSettings, bundled_checkpoints

log = logging.getLogger("service")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="qusec-serve", description="Serve QuSecNets-defended image classifiers over HTTP."
    )
    parser.add_argument("--host", help="address to bind (QUSEC_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (QUSEC_PORT; default 8000)")
    parser.add_argument(
        "--checkpoint",
        dest="checkpoints",
        action="append",
        metavar="FOLDER",
        help="checkpoint folder to load; repeatable (QUSEC_CHECKPOINTS, comma-separated; "
        "default: the bundled checkpoints)",
    )
    parser.add_argument("--default-model", help="name of the default model (QUSEC_DEFAULT_MODEL)")
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="QUSEC_DEVICE; default auto"
    )
    parser.add_argument("--torch-threads", type=int, help="QUSEC_TORCH_THREADS; default 1")
    parser.add_argument(
        "--workers",
        type=int,
        help="serving processes sharing the port, one per core to use (QUSEC_WORKERS; default 1)",
    )
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="QUSEC_LOG_LEVEL"
    )
    return parser.parse_args(argv)


def build_settings(args: argparse.Namespace) -> ServiceSettings:
    overrides = {
        key: value
        for key, value in {
            "host": args.host,
            "port": args.port,
            "checkpoints": args.checkpoints,
            "default_model": args.default_model,
            "device": args.device,
            "torch_threads": args.torch_threads,
            "workers": args.workers,
            "log_level": args.log_level,
        }.items()
        if value is not None
    }
    settings = ServiceSettings(**overrides)
    if not settings.checkpoints:
        settings = settings.model_copy(update={"checkpoints": bundled_checkpoints()})
    return settings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = build_settings(args)
    except ValidationError as exc:
        sys.stderr.write(f"qusec-serve: invalid configuration:\n{exc}\n")
        return 2
    if not settings.checkpoints:
        sys.stderr.write(
            "qusec-serve: no checkpoints: pass --checkpoint or set QUSEC_CHECKPOINTS "
            "(no bundled checkpoint is present)\n"
        )
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        for folder in settings.checkpoints:
            read_manifest(folder)  # a malformed manifest is refused before anything binds
    except CheckpointError as exc:
        sys.stderr.write(f"qusec-serve: refusing to start: {exc}\n")
        return 3

    if settings.workers > 1:
        from service.supervisor import supervise

        return supervise(settings)
    return serve(settings)


def serve(
    settings: ServiceSettings,
    sockets: list[socket.socket] | None = None,
    on_started: Callable[[], None] | None = None,
) -> int:
    """Run one serving process until it is told to stop: 0, or 3 when startup failed.

    ``sockets``: already bound (a supervisor's workers share one); else it binds its own.
    """
    from service.app import create_app  # after logging is configured, so import logs are seen

    app = create_app(settings)
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
        http=guarded_protocol(connection_limits(settings, app)),
    )
    ensure_file_descriptors(settings.max_connections)
    server = _Server(config, on_started)
    server.run(sockets=sockets)
    # uvicorn leaves started=False when startup failed (bad checkpoint, port in use).
    return 0 if server.started else 3


class _Server(uvicorn.Server):
    """uvicorn's server, telling ``on_started`` once the app has started and it listens."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_started is not None:
            self._on_started()


def connection_limits(settings: ServiceSettings, app) -> ConnectionLimits:
    metrics = app.state.metrics
    return ConnectionLimits(
        max_connections=settings.max_connections,
        max_header_bytes=settings.max_header_bytes,
        max_header_count=settings.max_header_count,
        header_timeout_seconds=settings.request_header_timeout_seconds,
        retry_after_seconds=settings.retry_after_seconds,
        on_refusal=lambda reason: metrics.rejections.labels(reason=reason).inc(),
        shed=lambda method, target: (
            method == "POST" and pool_overloaded(app) and is_inference(target)
        ),
    )


def pool_overloaded(app) -> bool:
    """Shed from 7/8 of the in-flight limit on: requests whose heads arrive in one burst all
    pass this check before any of them is admitted, and the slack keeps them from being
    refused later, after their bodies were read, on the app's much dearer path."""
    pool = app.state.pool
    return pool is not None and pool.in_flight * 8 >= pool.settings.max_in_flight * 7


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


if __name__ == "__main__":
    raise SystemExit(main())
