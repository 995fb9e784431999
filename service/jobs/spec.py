"""What a job runs and how its process is configured: plain values that cross the process
boundary as JSON, so the serving process never imports the job process's code."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


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

    def as_dict(self) -> dict:
        return {**asdict(self), "input_shape": list(self.input_shape)}

    @classmethod
    def from_dict(cls, raw: dict) -> JobSpec:
        return cls(**{**raw, "input_shape": tuple(raw["input_shape"])})


@dataclass(frozen=True)
class WorkerConfig:
    db_path: str
    job_id: str
    lease: str
    threads: int
    nice: int
    max_memory_bytes: int
    log_level: str
    log_format: str
    max_upload_images: int

    def to_line(self) -> bytes:
        return json.dumps(asdict(self)).encode() + b"\n"
