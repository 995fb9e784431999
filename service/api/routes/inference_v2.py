"""The Open Inference Protocol (KServe v2) REST endpoints, for KServe/Triton clients.

Each model route also answers under ``/versions/{version}`` for the one version a model
advertises (the first 12 hex digits of its weights' sha256); another version is a 404.
"""

from __future__ import annotations

import asyncio
import json
from importlib import metadata
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse

from service.api.admission import admitted
from service.api.deps import Pool, Settings
from service.api.open_inference import (
    EXTENSIONS,
    HEADER_LENGTH,
    infer_response,
    model_metadata,
    model_version,
    parse_infer_request,
)
from service.api.schemas import (
    ErrorBody,
    InferRequest,
    InferResponse,
    ModelMetadata,
    ModelReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
    error_responses,
    inline_schema,
    one_of,
)
from service.edge.body import Reservation, read_bounded
from service.edge.clients import client_address
from service.edge.content_coding import decode_content
from service.errors import InvalidRequest, UnknownModel
from service.inference.classifier import Classifier
from service.inference.pool import ClassifierPool

router = APIRouter(prefix="/v2", tags=["open inference protocol"])

_MODEL_ERRORS = error_responses(404, 422, 503)
_READY_DOC = {
    **_MODEL_ERRORS,
    200: {"model": ModelReady},
    503: {
        "description": "the model is not ready (or the pool not loaded: the error body)",
        "content": {"application/json": {"schema": one_of(ModelReady, ErrorBody)}},
    },
}
_INFER_DOC = {
    "requestBody": {
        "required": True,
        "description": "JSON, or with the binary tensor data extension a JSON header of "
        f"{HEADER_LENGTH} bytes followed by the tensors' little-endian bytes; the body may "
        "be gzip- or deflate-encoded (Content-Encoding)",
        "content": {
            "application/json": {"schema": inline_schema(InferRequest)},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_INFER_RESPONSES = {
    200: {
        "model": InferResponse,
        "description": "JSON; with binary outputs, the JSON header then the outputs' bytes",
        "headers": {HEADER_LENGTH: {"description": "bytes of JSON before binary outputs"}},
    },
    **error_responses(400, 404, 408, 413, 415, 422, 429, 503, 504),
}


def _version() -> str:
    try:
        return metadata.version("qusec")
    except metadata.PackageNotFoundError:
        return "unknown"


def _versioned(pool: ClassifierPool, name: str, version: str | None) -> Classifier:
    classifier = pool.lookup(name)
    if version is not None and version != model_version(classifier):
        raise UnknownModel(
            f"model {name!r} has no version {version[:64]!r}",
            message=f"model {name!r} has only version {model_version(classifier)!r}",
        )
    return classifier


@router.get("", summary="Server metadata", response_model=ServerMetadata)
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="qusec", version=_version(), extensions=list(EXTENSIONS))


@router.get("/health/live", summary="Server liveness", response_model=ServerLive)
async def live() -> ServerLive:
    return ServerLive(live=True)


@router.get(
    "/health/ready",
    summary="Server readiness",
    response_model=ServerReady,
    responses={503: {"model": ServerReady}},
)
async def ready(request: Request) -> JSONResponse:
    pool = request.app.state.pool
    is_ready = pool is not None and pool.ready
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get(
    "/models/{name}",
    summary="Model metadata",
    response_model=ModelMetadata,
    responses=_MODEL_ERRORS,
)
async def metadata_of(name: str, pool: Pool) -> dict:
    return model_metadata(pool.lookup(name))


@router.get(
    "/models/{name}/versions/{version}",
    summary="Model metadata of one version",
    response_model=ModelMetadata,
    responses=_MODEL_ERRORS,
)
async def versioned_metadata_of(name: str, version: str, pool: Pool) -> dict:
    return model_metadata(_versioned(pool, name, version))


@router.get("/models/{name}/ready", summary="Model readiness", responses=_READY_DOC)
async def model_ready(name: str, pool: Pool) -> JSONResponse:
    return _readiness(pool, name, None)


@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="Model readiness of one version",
    responses=_READY_DOC,
)
async def versioned_model_ready(name: str, version: str, pool: Pool) -> JSONResponse:
    return _readiness(pool, name, version)


def _readiness(pool: ClassifierPool, name: str, version: str | None) -> JSONResponse:
    _versioned(pool, name, version)
    return JSONResponse({"name": name, "ready": pool.ready}, status_code=200 if pool.ready else 503)


HeaderLength = Annotated[
    int | None,
    Header(
        alias=HEADER_LENGTH,
        ge=0,
        description="binary tensor data extension: the JSON header's length in bytes",
    ),
]


@router.post(
    "/models/{name}/infer",
    summary="Infer on FP32 tensors in [0, 1]",
    openapi_extra=_INFER_DOC,
    responses=_INFER_RESPONSES,
)
async def infer(
    name: str, request: Request, pool: Pool, settings: Settings, header_length: HeaderLength = None
) -> Response:
    return await _infer(pool.get(name), request, pool, settings, header_length)


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Infer on FP32 tensors in [0, 1], with one version of a model",
    openapi_extra=_INFER_DOC,
    responses=_INFER_RESPONSES,
)
async def versioned_infer(
    name: str,
    version: str,
    request: Request,
    pool: Pool,
    settings: Settings,
    header_length: HeaderLength = None,
) -> Response:
    classifier = _versioned(pool, name, version)
    return await _infer(pool.get(classifier.name), request, pool, settings, header_length)


async def _infer(
    classifier: Classifier,
    request: Request,
    pool: ClassifierPool,
    settings: Settings,
    header_length: int | None,
) -> Response:
    async def read(reservation: Reservation) -> bytes:
        return await read_bounded(
            request,
            settings.max_body_bytes,
            settings.body_read_timeout_seconds,
            min_rate=settings.body_min_rate_bytes_per_second,
            grace_seconds=settings.body_min_rate_grace_seconds,
            reservation=reservation,
        )

    async with admitted(pool, read, client_address(request.scope)) as body:
        call = await asyncio.get_running_loop().run_in_executor(
            pool.decode_pool, _parse, request, body, classifier, settings, header_length
        )
        probabilities = await classifier.infer(call.rows)
    reply, binary = infer_response(classifier, call, probabilities)
    if not binary:
        return JSONResponse(reply)
    header = json.dumps(reply, separators=(",", ":")).encode()
    return Response(
        header + binary,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


def _parse(request: Request, body: bytes, classifier: Classifier, settings, header_length):
    """Inflate and parse a request body; runs on the decode pool."""
    body = decode_content(body, request.headers.get("content-encoding"), settings.max_body_bytes)
    if header_length == 0:
        raise InvalidRequest(f"{HEADER_LENGTH}: 0", message=f"{HEADER_LENGTH} must be positive")
    return parse_infer_request(body, classifier.input_shape, settings.max_infer_rows, header_length)
