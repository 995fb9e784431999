"""What a job runs and how its process is configured: plain values that cross the process
boundary as JSON, so the serving process never imports the job process's code."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from service.jobs.store import JobStore, open_store

if TYPE_CHECKING:
    from service.settings import ServiceSettings

# A job process that gave up its run because the job store failed exits with this status
# (EX_TEMPFAIL): the service that started it hands the run back to the queue.
STORE_FAULT_EXIT_STATUS = 75


@dataclass(frozen=True)
class JobSpec:
    """What a job runs: stored as JSON with the job and read back by the job process."""

    model: str
    checkpoint: str
    weights_sha256: str
    input_shape: tuple[int, int, int]
    classes: int
    surrogate: str | None
    eval_set: str | None  # None: the sample set uploaded with the job
    request: dict
    time_budget_seconds: float
    cost: int = 0  # estimated model evaluations of one image (service.jobs.cost)
    # A part of a split check: the positions in the suite's plan this job runs.
    units: tuple[int, ...] | None = None
    # The radii as the request wrote them ("8/255"), echoed in the job's answers.
    radii_as_given: dict | None = None
    # The bar the check is held to and why its request cannot meet it
    # (service.jobs.qualifying): {"bar": {...}, "reasons": [...]}.
    qualification: dict | None = None

    def as_dict(self) -> dict:
        units = list(self.units) if self.units is not None else None
        return {**asdict(self), "input_shape": list(self.input_shape), "units": units}

    @classmethod
    def from_dict(cls, raw: dict) -> JobSpec:
        units = raw.get("units")
        return cls(
            **{
                **raw,
                "input_shape": tuple(raw["input_shape"]),
                "units": tuple(units) if units is not None else None,
            }
        )


@dataclass(frozen=True)
class WorkerConfig:
    jobs_url: str | None  # None: SQLite at db_path
    db_path: str
    threads: int
    nice: int
    max_memory_bytes: int
    log_level: str
    log_format: str
    max_upload_images: int
    lease_seconds: float
    stop_grace_seconds: float
    job_id: str | None = None  # the job a service replica claimed for this process
    lease: str | None = None

    @classmethod
    def from_settings(cls, settings: ServiceSettings, **job: str) -> WorkerConfig:
        url = settings.jobs_url.get_secret_value() if settings.jobs_url else None
        return cls(
            jobs_url=url,
            db_path=str(settings.robustness_db.resolve()),
            threads=settings.robustness_threads,
            nice=settings.robustness_nice,
            max_memory_bytes=settings.robustness_max_memory_bytes,
            log_level=settings.log_level,
            log_format=settings.log_format,
            max_upload_images=settings.robustness_max_upload_images,
            lease_seconds=settings.robustness_lease_seconds,
            stop_grace_seconds=settings.robustness_stop_grace_seconds,
            **job,
        )

    def to_line(self) -> bytes:
        return json.dumps(asdict(self)).encode() + b"\n"

    def store(self) -> JobStore:
        return open_store(self.jobs_url, self.db_path)
