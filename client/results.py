"""Typed answers: one frozen dataclass per response schema of the service's OpenAPI document
(``ClassifyResponse``, ``ModelList``, ``RobustnessJob``, ...), with the same field names.

Each is built with ``from_json`` from the decoded body; keys the client does not know (a
newer service) are left out rather than refused.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

# A job in one of these states may still change; any other state is final.
ACTIVE_STATUSES = ("queued", "running")


@dataclass(frozen=True)
class Defence:
    kind: str  # none, cq (constant) or tq (trainable) quantization
    levels: int | None
    thresholds: list[float]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Defence:
        return cls(data["kind"], data.get("levels"), list(data.get("thresholds", [])))


@dataclass(frozen=True)
class ModelBrief:
    name: str
    dataset: str
    weights_sha256: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelBrief:
        return cls(data["name"], data["dataset"], data["weights_sha256"])


@dataclass(frozen=True)
class EncodedImage:
    """An image the service returns inline (``QuantizedImage`` in the document)."""

    media_type: str
    encoding: str
    data: str

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> EncodedImage | None:
        return None if data is None else cls(data["media_type"], data["encoding"], data["data"])

    def content(self) -> bytes:
        """The image file's bytes (a PNG)."""
        if self.encoding != "base64":
            raise ValueError(f"unknown image encoding {self.encoding!r}")
        return base64.b64decode(self.data)


@dataclass(frozen=True)
class Classification:
    """``POST /classify``'s answer (``ClassifyResponse``)."""

    request_id: str | None
    label: int
    class_name: str
    probabilities: dict[str, float]  # class name -> probability
    model: ModelBrief
    defence: Defence
    input: dict[str, Any]  # what the upload was: format, size, mode, ...
    warnings: list[dict[str, str]]  # {"code", "message"}: the upload does not fit the model
    batch_rows: int
    timings_seconds: dict[str, float]
    quantized_image: EncodedImage | None = None  # with include_quantized=True
    input_image: EncodedImage | None = None  # with include_input=True

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Classification:
        return cls(
            request_id=data.get("request_id"),
            label=int(data["label"]),
            class_name=data["class_name"],
            probabilities=dict(data["probabilities"]),
            model=ModelBrief.from_json(data["model"]),
            defence=Defence.from_json(data["defence"]),
            input=dict(data.get("input", {})),
            warnings=[dict(warning) for warning in data.get("warnings", [])],
            batch_rows=int(data.get("batch_rows", 1)),
            timings_seconds=dict(data.get("timings_seconds", {})),
            quantized_image=EncodedImage.from_json(data.get("quantized_image")),
            input_image=EncodedImage.from_json(data.get("input_image")),
        )


@dataclass(frozen=True)
class ModelDescription:
    """What a client needs to use a model (``GET /models``)."""

    name: str
    dataset: str
    architecture: str
    input_shape: list[int]  # [C, H, W]
    class_names: list[str]
    defence: Defence
    weights_sha256: str
    clean_accuracy: float | None  # on the test set, as the manifest states

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelDescription:
        return cls(
            name=data["name"],
            dataset=data["dataset"],
            architecture=data["architecture"],
            input_shape=list(data["input_shape"]),
            class_names=list(data["class_names"]),
            defence=Defence.from_json(data["defence"]),
            weights_sha256=data["weights_sha256"],
            clean_accuracy=data.get("clean_accuracy"),
        )


@dataclass(frozen=True)
class ModelList:
    """``GET /models``: the loaded models, and which one answers without ``model=``."""

    default: str | None
    ready: bool
    models: list[ModelDescription]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelList:
        models = [ModelDescription.from_json(m) for m in data["models"]]
        return cls(data.get("default"), bool(data["ready"]), models)

    @property
    def names(self) -> list[str]:
        return [model.name for model in self.models]


@dataclass(frozen=True)
class JobProgress:
    done_batches: int
    total_batches: int
    fraction: float
    attack: str | None = None
    threat_model: str | None = None
    epsilon: float | None = None
    epsilon_label: str | None = None  # the radius as the request wrote it ("8/255")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobProgress:
        return cls(
            done_batches=int(data["done_batches"]),
            total_batches=int(data["total_batches"]),
            fraction=float(data["fraction"]),
            attack=data.get("attack"),
            threat_model=data.get("threat_model"),
            epsilon=data.get("epsilon"),
            epsilon_label=data.get("epsilon_label"),
        )


@dataclass(frozen=True)
class RobustnessJob:
    """A robustness check as the admin API shows it (``RobustnessJob``)."""

    id: str
    status: str  # queued, running, done, failed, cancelled, timed_out, interrupted
    model: str
    samples: str  # the bundled set's file name, or "uploaded"
    request: dict[str, Any]
    time_budget_seconds: float
    estimated_cost: int | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    progress: JobProgress
    cancel_requested: bool
    attempt: int
    parts: int | None
    error: str | None
    worst_case: list[dict[str, Any]] | None
    # Whether the finished check met the bar and so set its model's robustness gauges
    # (None while it runs), and the bar with the reasons it does not or cannot.
    qualifying: bool | None = None
    qualification: dict[str, Any] | None = None
    radii_as_given: dict[str, Any] | None = None  # the radii as the request wrote them
    report: dict[str, Any] | None = None  # only when one job is fetched
    location: str | None = None  # only on submission

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RobustnessJob:
        return cls(
            id=data["id"],
            status=data["status"],
            model=data["model"],
            samples=data["samples"],
            request=dict(data["request"]),
            time_budget_seconds=float(data["time_budget_seconds"]),
            estimated_cost=data.get("estimated_cost"),
            created_at=data.get("created_at"),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            progress=JobProgress.from_json(data["progress"]),
            cancel_requested=bool(data.get("cancel_requested", False)),
            attempt=int(data.get("attempt", 0)),
            parts=data.get("parts"),
            error=data.get("error"),
            worst_case=data.get("worst_case"),
            qualifying=data.get("qualifying"),
            qualification=data.get("qualification"),
            radii_as_given=data.get("radii_as_given"),
            report=data.get("report"),
            location=data.get("location"),
        )

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE_STATUSES


def job_list(data: dict[str, Any]) -> list[RobustnessJob]:
    """``GET /robustness-check`` (``RobustnessJobList``), newest first."""
    return [RobustnessJob.from_json(job) for job in data["jobs"]]
