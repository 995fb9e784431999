"""``python -m service`` / ``qusec-serve``: parse arguments, build settings, serve.

One process (``service.server``), or with ``--workers N`` a supervisor of N
(``service.supervisor``).

Command-line options override ``QUSEC_*`` environment variables, which
override the defaults. ``--checkpoint`` may be repeated; the first one named is
the default model unless ``--default-model`` (or QUSEC_DEFAULT_MODEL) says otherwise.
With neither ``--checkpoint`` nor QUSEC_CHECKPOINTS, the bundled checkpoints are served.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from models.checkpoint import CheckpointError, read_manifest
from service.logs import configure_logging
from service.settings import ServiceSettings, bundled_checkpoints


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
    from service.server import serve

    return serve(settings)


if __name__ == "__main__":
    raise SystemExit(main())
