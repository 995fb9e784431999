"""POST /classify: an uploaded image in, the defended model's prediction out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from service.deps import Pool
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
    request: Request,
    pool: Pool,
    model: Annotated[str | None, Query(max_length=128, description="loaded model name")] = None,
    include_quantized: Annotated[
        bool, Query(description="also return the quantized image the model saw (PNG, base64)")
    ] = False,
    include_input: Annotated[
        bool,
        Query(
            description="also return the image as the model's input, after decoding, "
            "resizing and scaling to [0, 1], before quantization (PNG, base64)"
        ),
    ] = False,
) -> JSONResponse:
    classifier = pool.get(model)
    pool.check_capacity()  # refused before a byte of the body is read
    with pool.body_budget.reserve() as reservation:
        body = await classifier.classify(
            request,
            include_quantized,
            include_input,
            admit=pool.admit,
            reservation=reservation,
        )
    return JSONResponse(body)
