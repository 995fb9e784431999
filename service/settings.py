"""Typed service configuration, read from ``QUSEC_*`` environment variables.

Settings are built inside ``create_app`` (or by the CLI), never at import, so
tests pass their own. Units are in the names: ``_bytes``, ``_seconds``.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.evalset import EVAL_DIR

MiB = 1 << 20
ENV_PREFIX = "QUSEC_"

# The checkpoints served when none is named: folders under checkpoints/ beside the packages.
# Adding a bundled model is one more name here; a name whose folder is absent is skipped.
# The first is the default model. The adversarially trained models lead: they are the most
# robust per dataset under adaptive attacks (docs/results.md, "Adversarial training"); the
# plain ResNet-20 is the accurate CIFAR-10 model (90.5% clean, not robust); the TQ models are
# the paper's defence, kept for comparison.
BUNDLED_CHECKPOINTS_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
BUNDLED_CHECKPOINTS = (
    "mnist-pgd",
    "cifar10-resnet20-fgsm",
    "cifar10-resnet20",
    "mnist-tq2",
    "cifar10-tq4",
)

# The published robustness reports of the bundled models (docs/results/, made by
# `python -m robustness evaluate`): each served model whose weights one of them attacked shows
# it until a qualifying check finishes (service/jobs/published.py).
BUNDLED_REPORTS_DIR = Path(__file__).resolve().parent.parent / "docs" / "results"

# Pillow refuses anything above twice this many pixels on its own; our limit must
# stay below it so that every oversized image gets our 413, not Pillow's error.
PILLOW_PIXEL_CEILING = 89_478_485
# Shorter admin tokens are refused: a guessable token would open the admin routes.
MIN_ADMIN_TOKEN_CHARS = 16


class ServiceSettings(BaseSettings):
    """Everything the service can be told. Defaults suit a small CPU host."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # Models. QUSEC_CHECKPOINTS is a comma-separated list of checkpoint folders.
    checkpoints: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    default_model: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # One intra-op thread: the CNN is tiny and batches are small, so extra threads
    # only contend with request decoding for the same cores.
    torch_threads: int = Field(1, ge=1, le=64)

    # Listening (the CLI's --host/--port override these).
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # Serving processes sharing the port (service.supervisor). One event loop runs the
    # request path of one process, so a host serves on as many cores as it has workers.
    # Every per-process limit below (connections, in-flight, queues, decode workers)
    # applies to each worker.
    workers: int = Field(1, ge=1, le=64)
    # How the workers' connections are shared out (service/edge/handoff.py): "least", the
    # supervisor accepts each and hands it to the worker holding the fewest; "kernel", every
    # worker accepts on the shared socket itself, whichever wakes first.
    connection_balancing: Literal["least", "kernel"] = "least"
    # Whether each worker runs on a CPU of its own (service/placement.py): "auto", when the
    # service may use exactly as many CPUs as it has workers; "always"; "never".
    pin_workers: Literal["auto", "always", "never"] = "auto"

    # Input limits.
    max_body_bytes: int = Field(5 * MiB, ge=1024, le=256 * MiB)
    max_image_pixels: int = Field(4096 * 4096, ge=1, le=PILLOW_PIXEL_CEILING)
    max_image_side: int = Field(8192, ge=1, le=65535)
    resize_policy: Literal["letterbox", "stretch"] = "letterbox"
    background: int = Field(0, ge=0, le=255)
    max_infer_rows: int = Field(256, ge=1, le=65536)
    body_read_timeout_seconds: float = Field(30.0, gt=0)
    # After this grace period a body must keep arriving at the minimum rate, or it is
    # cut off (408): a client trickling bytes holds its own connection for seconds, not 30 s.
    body_min_rate_bytes_per_second: float = Field(1024.0, ge=0)
    body_min_rate_grace_seconds: float = Field(5.0, gt=0)
    # Bodies are read before admission; together they may hold at most this many bytes.
    max_buffered_body_bytes: int = Field(256 * MiB, ge=1024 * 1024)
    # One client's (one source address's) bodies in flight: what each declared, or what
    # arrived when more did. A client with none in flight may always start one. 0: no cap.
    max_buffered_body_bytes_per_client: int = Field(64 * MiB, ge=0)

    # Connections (enforced by service.edge.connection, below the app).
    max_connections: int = Field(1024, ge=1, le=1_000_000)
    # Open connections of one client (source address); 0: no cap. Behind a proxy every
    # request comes from the proxy's address: turn the per-client caps off there.
    max_connections_per_client: int = Field(256, ge=0, le=1_000_000)
    max_header_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024)  # request line + headers
    max_header_count: int = Field(100, ge=8, le=10_000)
    # A connection must send a complete request head within this long of connecting or of
    # its previous response; the keep-alive timeout closes idle ones sooner.
    request_header_timeout_seconds: float = Field(10.0, gt=0)
    keep_alive_timeout_seconds: int = Field(5, ge=1, le=3600)
    # After an answer given before its request has all arrived (a refusal, an early 413),
    # the rest is read and discarded for at most this long and this many bytes, so that
    # the client reads the answer instead of a reset; then the connection closes (or, when
    # the request did end in time, waits for the next one as keep-alive connections do).
    linger_seconds: float = Field(5.0, gt=0, le=600)
    linger_max_bytes: int = Field(16 * MiB, ge=0)

    # Decode budget: uploads that are not tiny are decoded in worker processes, each killed
    # (and replaced) when a decode passes the deadline or its memory cap.
    decode_processes: int = Field(2, ge=1, le=64)
    decode_timeout_seconds: float = Field(3.0, gt=0)
    decode_max_memory_bytes: int = Field(1024 * MiB, ge=256 * MiB)
    # A decode worker whose resident memory passes this after a task is replaced.
    decode_recycle_rss_bytes: int = Field(256 * MiB, ge=64 * MiB)
    max_jpeg_scans: int = Field(32, ge=1, le=10_000)
    # Decode cost, estimated from the header before decoding (service.sanitize.decode_cost):
    # the bytes of samples the decoder produces, over every frame and JPEG scan. From
    # decode_heavy_cost_bytes on, an upload is heavy: heavy decodes occupy at most
    # decode_heavy_processes of the decode processes at once (niced by decode_heavy_nice),
    # so the others are always there for light ones.
    decode_heavy_cost_bytes: int = Field(8 * MiB, ge=1)
    decode_heavy_processes: int = Field(1, ge=1, le=63)
    decode_heavy_nice: int = Field(10, ge=0, le=19)
    # One client's decodes queued or running, in estimated cost (one is always allowed).
    decode_max_cost_bytes_per_client: int = Field(256 * MiB, ge=0)  # 0: no cap
    # The costliest upload accepted from a request without the admin token (64 MiB: a
    # 4096 x 4096 8-bit RGBA image); with the token only the pixel and scan limits apply.
    anonymous_max_decode_cost_bytes: int = Field(64 * MiB, ge=1)

    # Batching and load shedding.
    max_batch_size: int = Field(32, ge=1, le=4096)
    max_batch_wait_seconds: float = Field(0.005, ge=0, le=1.0)
    queue_size: int = Field(512, ge=1)
    # Requests admitted past their body read (decoding, queued or running); closed-loop
    # clients up to this many are all served, beyond it refusals are cheap
    # (service.edge.connection).
    max_in_flight: int = Field(512, ge=1)
    request_timeout_seconds: float = Field(10.0, gt=0)
    retry_after_seconds: int = Field(1, ge=1, le=3600)
    decode_threads: int = Field(2, ge=1, le=64)  # tensor parsing and quantizing off the loop

    # Operations.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    graceful_shutdown_seconds: float = Field(30.0, ge=0)
    # A deliberately naive endpoint, only for the benchmark's comparison.
    enable_naive_endpoint: bool = False

    # Admin: robustness-check jobs. With neither token setting, the admin routes are not mounted.
    admin_token: SecretStr | None = None
    admin_token_file: Path | None = None
    # A read-only token for the robustness scrape (GET /admin/metrics), for Prometheus,
    # which then holds no token that can start or cancel checks. The admin token works
    # there too; the public /metrics never shows robustness figures.
    scrape_token: SecretStr | None = None
    scrape_token_file: Path | None = None
    robustness_db: Path = Path("var/robustness-jobs.sqlite3")
    # A shared job store on PostgreSQL (postgresql://user:pass@host/db) for several
    # replicas and workers; unset, jobs live in the SQLite file robustness_db.
    jobs_url: SecretStr | None = None
    # Whether this process runs queued jobs; a replica that only serves (and answers the
    # admin routes) sets it false and leaves the work to `qusec-worker` processes.
    robustness_run_jobs: bool = True
    # A running job's lease: its holder renews it every third of this; a holder silent
    # for longer is presumed dead and its job re-queued (once) by whoever notices.
    robustness_lease_seconds: float = Field(30.0, ge=1.0, le=3600.0)
    # Split each check into its units (attack, threat model, radius), each a part any
    # worker can claim; the parts' rows are assembled into one report.
    robustness_split_units: bool = False
    robustness_surrogate: Path | None = None  # default: <dataset>-undefended beside the model
    # Where the bundled evaluation subsets (<dataset>-test-first1000.npz) are read from.
    eval_dir: Path = EVAL_DIR
    robustness_threads: int = Field(1, ge=1, le=64)  # torch threads of the job process
    robustness_nice: int = Field(10, ge=0, le=19)  # added niceness of the job process
    # Address-space cap of the job process: an attack asked for with huge parameters fails
    # there with a clear error instead of pushing the machine (and the service) out of memory.
    robustness_max_memory_bytes: int = Field(4 * 1024 * MiB, ge=1024 * MiB)
    robustness_queue_size: int = Field(4, ge=0, le=1000)  # jobs waiting behind the running one
    # Finished jobs kept in the database (and the newest completed one of each model).
    robustness_keep_finished_jobs: int = Field(200, ge=1, le=1_000_000)
    robustness_max_samples: int = Field(1000, ge=1, le=100_000)
    robustness_max_epsilons: int = Field(8, ge=1, le=64)  # per norm
    # Estimated model evaluations of one image (service/jobs/cost.py) one check may take,
    # and all queued and running checks together.
    robustness_max_cost: int = Field(20_000_000, ge=1)
    robustness_max_queued_cost: int = Field(50_000_000, ge=1)
    robustness_max_upload_bytes: int = Field(16 * MiB, ge=1024, le=1024 * MiB)
    robustness_max_upload_images: int = Field(10_000, ge=1, le=1_000_000)
    # The default and the largest per-job time budget; a job may ask for less.
    robustness_time_budget_seconds: float = Field(1800.0, gt=0)
    # How long a stopping job may take to hand back partial results before it is killed.
    robustness_stop_grace_seconds: float = Field(30.0, ge=0)
    # The bar a check must meet to set a model's robustness gauges (service/jobs/
    # qualifying.py): every threat model that applies, these strong attacks under each of
    # them, these L-inf radii (unset: the dataset's), this many samples (unset: the whole
    # bundled evaluation set). Checks below it are stored and shown, never exported.
    robustness_qualifying_attacks: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["pgd", "apgd_ce"]
    )
    robustness_qualifying_epsilons: Annotated[list[float] | None, NoDecode] = None
    robustness_qualifying_samples: int | None = Field(None, ge=1)
    # Where the published reports are read from at startup (searched recursively), the
    # repository's docs/results by default; "none" or empty: none is used.
    published_reports: Path | None = BUNDLED_REPORTS_DIR

    @property
    def admin_enabled(self) -> bool:
        return self.admin_token is not None or self.admin_token_file is not None

    @property
    def scrape_enabled(self) -> bool:
        return self.scrape_token is not None or self.scrape_token_file is not None

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_environment(cls, values: Any) -> Any:
        # pydantic-settings ignores unknown variables; a misspelt one would silently leave
        # its setting at the default (a job database under the working directory, say).
        problems = unknown_environment(os.environ, cls.model_fields)
        if problems:
            raise ValueError("; ".join(problems))
        return values

    @field_validator("checkpoints", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("published_reports", mode="before")
    @classmethod
    def _none_disables(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return None
        return value

    @field_validator("robustness_qualifying_attacks", mode="before")
    @classmethod
    def _attack_names(cls, value: object) -> object:
        from robustness.attacks import ATTACKS  # the registry loads the attack libraries

        names = _comma_list(value)
        unknown = [name for name in names if name not in ATTACKS] if isinstance(names, list) else []
        if unknown:
            raise ValueError(f"unknown attacks {unknown}; valid: {', '.join(ATTACKS)}")
        return names

    @field_validator("robustness_qualifying_epsilons", mode="before")
    @classmethod
    def _radii(cls, value: object) -> object:
        from robustness.request import parse_radii

        if value is None or value == "":
            return None
        return list(parse_radii(value, "robustness_qualifying_epsilons"))

    @field_validator("admin_token", "scrape_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(
                f"{info.field_name} must have at least {MIN_ADMIN_TOKEN_CHARS} characters"
            )
        return value

    @field_validator("jobs_url")
    @classmethod
    def _postgres_only(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("jobs_url must be a postgresql:// URL (unset: SQLite)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_consistency(self) -> ServiceSettings:
        if self.queue_size < self.max_batch_size:
            raise ValueError(
                f"queue_size ({self.queue_size}) must be at least max_batch_size "
                f"({self.max_batch_size}), or batches can never fill"
            )
        if self.decode_processes > 1 and self.decode_heavy_processes >= self.decode_processes:
            raise ValueError(
                f"decode_heavy_processes ({self.decode_heavy_processes}) must be less than "
                f"decode_processes ({self.decode_processes}), or light uploads wait for heavy ones"
            )
        for token in ("admin_token", "scrape_token"):
            if getattr(self, token) is not None and getattr(self, f"{token}_file") is not None:
                raise ValueError(f"set {token} or {token}_file, not both")
        if self.scrape_enabled and not self.admin_enabled:
            raise ValueError(
                "a scrape token needs admin_token or admin_token_file: without them there "
                "are no robustness checks, and nothing to scrape"
            )
        return self


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def unknown_environment(environ: dict[str, str] | os._Environ, fields: dict[str, Any]) -> list[str]:
    """One message per ``QUSEC_*`` variable that names no setting, with the closest one."""
    valid = [f"{ENV_PREFIX}{name.upper()}" for name in fields]
    problems = []
    for key in sorted(environ):
        if key.upper().startswith(ENV_PREFIX) and key.upper() not in valid:
            close = difflib.get_close_matches(key.upper(), valid, n=1, cutoff=0.0)
            hint = f"; did you mean {close[0]}?" if close else ""
            problems.append(f"unknown setting {key}{hint}")
    return problems


def bundled_checkpoints() -> list[Path]:
    """The bundled checkpoint folders that are present, in ``BUNDLED_CHECKPOINTS`` order."""
    folders = (BUNDLED_CHECKPOINTS_DIR / name for name in BUNDLED_CHECKPOINTS)
    return [folder for folder in folders if (folder / "manifest.json").is_file()]
