"""The shapes of what the service answers, for the OpenAPI document and typed handlers.

Handlers off the hot path return these models (FastAPI checks them); ``/classify`` and
``/v2/models/{name}/infer`` build their JSON directly, for speed, and these models only
document it (``responses={200: {"model": ...}}``); tests check real answers against the
document. Every error is ``ErrorBody``; ``error_responses`` says which statuses a route
can answer, so the document lists each status a client can see.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.errors import REJECTION_TYPES


class ErrorBody(BaseModel):
    """Every rejection: a short message, a stable reason code, the request's id."""

    error: str = Field(description="what went wrong, for a person")
    reason: str = Field(description="stable code, e.g. body_too_large")
    request_id: str | None = Field(None, description="the id the log lines carry too")


_REASONS_BY_STATUS: dict[int, list[str]] = {}
for _error in REJECTION_TYPES:
    _REASONS_BY_STATUS.setdefault(_error.status, []).append(_error.reason)
_REASONS_BY_STATUS.setdefault(404, []).append("not_found")
_REASONS_BY_STATUS.setdefault(500, []).append("internal_error")
_RETRY = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each with the error body (and 500)."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, 500}):
        reasons = ", ".join(_REASONS_BY_STATUS.get(status, ["http_error"]))
        entry: dict[str, Any] = {"model": ErrorBody, "description": f"reason: {reasons}"}
        if status in (429, 503):
            entry["headers"] = _RETRY
        documented[status] = entry
    return documented


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with its nested models written in place, for a request body
    documented by hand (``openapi_extra``), where ``#/$defs/...`` would not resolve."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


def one_of(*models: type[BaseModel]) -> dict[str, Any]:
    """A schema for a body that is one of ``models`` (each also named in some route's
    ``responses`` or ``response_model``, so that it is among the document's components)."""
    return {"anyOf": [{"$ref": f"#/components/schemas/{m.__name__}"} for m in models]}


# --- operations -------------------------------------------------------------------------


class Liveness(BaseModel):
    status: str = Field(description="ok, or failed when a model can no longer run")
    error: str | None = None


class Readiness(BaseModel):
    status: str = Field(description="ready or not_ready")
    models: list[str] | None = None


class Defence(BaseModel):
    kind: str = Field(description="none, cq (constant) or tq (trainable) quantization")
    levels: int | None = None
    thresholds: list[float]


class ModelDescription(BaseModel):
    """What a client needs to use a model."""

    name: str
    dataset: str
    architecture: str
    input_shape: list[int] = Field(description="[C, H, W]")
    class_names: list[str]
    defence: Defence
    weights_sha256: str
    clean_accuracy: float | None = Field(description="on the test set, as the manifest states")


class ModelList(BaseModel):
    default: str | None
    ready: bool
    models: list[ModelDescription]


class PublishedReportSummary(BaseModel):
    """The robustness report published with a model's weights (``docs/results/``, read from
    ``QUSEC_PUBLISHED_REPORTS`` at startup): it sets the model's robustness figures until a
    qualifying check does."""

    file: str = Field(description="its name in the published-reports folder (no other path)")
    weights_sha256: str = Field(description="sha256 of the weights it attacked")
    weights_match: bool = Field(description="always true: a report of other weights is not used")
    started_at: str
    finished_at: str
    status: str | None = Field(description="complete, or stopped (at its time budget)")
    samples: int | None
    worst_case: list[dict[str, Any]] = Field(description="its headline, per norm and radius")
    request: dict[str, Any] = Field(
        description="what it ran: attacks, threat_models, epsilons, l2_epsilons"
    )
    in_gauges: bool = Field(
        description="whether the robustness gauges show it now: true until a qualifying "
        "check of the model finishes"
    )


class PublishedReport(PublishedReportSummary):
    model: str = Field(description="the served model's name")
    report: dict[str, Any] = Field(description="the report as published")


class FullModelDescription(ModelDescription):
    """A model as the operator sees it: where it was loaded from and its whole manifest
    (training settings and history, the training machine's paths)."""

    device: str
    path: str
    manifest: dict[str, Any]
    published_report: PublishedReportSummary | None = Field(
        None, description="the report published with its weights; null: none was found"
    )


class FullModelList(BaseModel):
    default: str | None
    ready: bool
    models: list[FullModelDescription]


# --- classification ---------------------------------------------------------------------


class ModelBrief(BaseModel):
    name: str
    dataset: str
    weights_sha256: str


class QuantizedImage(BaseModel):
    media_type: str
    encoding: str
    data: str


class InputWarning(BaseModel):
    code: str = Field(
        description="colour_image_for_grey_model, grey_image_for_colour_model, "
        "much_larger_than_input or aspect_ratio_mismatch"
    )
    message: str


class ClassifyResponse(BaseModel):
    request_id: str | None
    label: int
    class_name: str
    probabilities: dict[str, float]
    model: ModelBrief
    defence: Defence
    input: dict[str, Any] = Field(description="what the upload was: format, size, mode, ...")
    warnings: list[InputWarning] = Field(
        description="each clear mismatch between the upload and the model (also named in "
        "the QuSec-Input-Warning header); the answer is given all the same"
    )
    quantized_image: QuantizedImage | None = Field(
        None, description="only with include_quantized=true"
    )
    batch_rows: int
    timings_seconds: dict[str, float]


# --- Open Inference Protocol ------------------------------------------------------------


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class InferInput(BaseModel):
    name: str = Field(description="input")
    shape: list[int] = Field(description="[N, C, H, W]")
    datatype: str = Field(description="FP32")
    parameters: dict[str, Any] | None = Field(
        None, description="binary_data_size: bytes of this tensor after the JSON header"
    )
    data: list[Any] | None = Field(None, description="values in [0, 1], flat or nested")


class InferOutputRequest(BaseModel):
    name: str = Field(description="probabilities or label")
    parameters: dict[str, Any] | None = Field(None, description="binary_data: true for bytes")


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        None, description="binary_data_output: true returns every output as bytes"
    )
    inputs: list[InferInput]
    outputs: list[InferOutputRequest] | None = None


class InferOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[InferOutput]


# --- admin ------------------------------------------------------------------------------


class JobProgress(BaseModel):
    done_batches: int
    total_batches: int
    fraction: float
    attack: str | None = None
    threat_model: str | None = None
    epsilon: float | None = None
    epsilon_label: str | None = Field(None, description="the radius as the request wrote it")


class RobustnessJob(BaseModel):
    id: str
    status: str = Field(description="queued, running, done, failed, cancelled, ...")
    model: str
    samples: str = Field(description="the bundled set's file name, or 'uploaded'")
    request: dict[str, Any]
    time_budget_seconds: float
    estimated_cost: int | None = Field(
        description="model evaluations of one image the check may take (service.jobs.cost)"
    )
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    progress: JobProgress
    cancel_requested: bool
    attempt: int = Field(description="runs so far: a holder whose lease lapsed re-queues it once")
    parts: int | None = Field(description="a split check's number of parts; null when whole")
    error: str | None
    worst_case: list[dict[str, Any]] | None
    radii_as_given: dict[str, Any] | None = Field(
        None, description='the radii exactly as the request wrote them ("8/255"), when it did'
    )
    qualifying: bool | None = Field(
        description="whether the finished check met the bar and so set its model's robustness "
        "gauges (null while it runs)"
    )
    qualification: dict[str, Any] | None = Field(
        description="the bar (threat models, strong attacks, radii, samples) and, when it "
        "does not or cannot qualify, the reasons"
    )
    report: dict[str, Any] | None = Field(None, description="only on GET of one job")
    location: str | None = Field(None, description="only on submission")


class RobustnessJobList(BaseModel):
    jobs: list[RobustnessJob]
