"""POST /classify: an uploaded image in, the defended model's prediction out.

The route is declared to FastAPI (so the OpenAPI document describes it), but the
request itself is served by ``serve`` straight from the service's outer middleware:
the hot path skips FastAPI's routing, dependency solving and exception layers,
which cost about a quarter of a request's event-loop time. Both entry points run the
same ``_classify`` with the same ``ClassifyQuery`` rules and the same error bodies.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.types import Receive, Scope, Send

from service.deps import Pool
from service.errors import (
    NotReady,
    ServiceError,
    service_error_response,
    validation_error_response,
)
from service.pool import ClassifierPool
from service.schemas import ClassifyResponse, error_responses

router = APIRouter(tags=["classify"])

# The body is read by the pipeline's own bounded reader, so FastAPI is only told
# what it looks like, for the OpenAPI document.
_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


class ClassifyQuery(BaseModel):
    """The query parameters of ``POST /classify`` (unknown ones are ignored)."""

    model: str | None = Field(None, max_length=128, description="loaded model name")
    include_quantized: bool = Field(
        False, description="also return the quantized image the model saw (PNG, base64)"
    )
    include_input: bool = Field(
        False,
        description="also return the image as the model's input, after decoding, "
        "resizing and scaling to [0, 1], before quantization (PNG, base64)",
    )


@router.post(
    "/classify",
    summary="Classify an image (raw body or multipart 'file')",
    openapi_extra=_BODY_DOC,
    # Documentation only: the handler sends the pipeline's JSON as it is, for speed.
    responses={
        200: {"model": ClassifyResponse},
        **error_responses(400, 404, 408, 413, 415, 422, 503, 504),
    },
)
async def classify(
    request: Request, pool: Pool, query: Annotated[ClassifyQuery, Query()]
) -> JSONResponse:
    return JSONResponse(await _classify(pool, request, query))


async def serve(scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /classify`` as a plain ASGI call (see the module's docstring)."""
    request = Request(scope, receive)
    try:
        try:
            query = ClassifyQuery.model_validate(
                dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
            )
        except ValidationError as exc:
            errors = [{**e, "loc": ("query", *e["loc"])} for e in exc.errors(include_url=False)]
            response = validation_error_response(request, errors)
        else:
            pool: ClassifierPool | None = request.app.state.pool
            if pool is None:
                raise NotReady("the model pool has not been loaded yet")
            response = JSONResponse(await _classify(pool, request, query))
    except ServiceError as exc:
        response = service_error_response(
            request, exc, request.app.state.settings.retry_after_seconds
        )
    await response(scope, receive, send)


async def _classify(pool: ClassifierPool, request: Request, query: ClassifyQuery) -> dict:
    classifier = pool.get(query.model)
    pool.check_capacity()  # refused before a byte of the body is read
    with pool.body_budget.reserve() as reservation:
        return await classifier.classify(
            request,
            query.include_quantized,
            query.include_input,
            admit=pool.admit,
            reservation=reservation,
        )
