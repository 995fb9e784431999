"""POST /classify: an uploaded image in, the defended model's prediction out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from service.deps import Pool

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
)
async def classify(
    request: Request,
    pool: Pool,
    model: Annotated[str | None, Query(max_length=128, description="loaded model name")] = None,
    include_quantized: Annotated[
        bool, Query(description="also return the quantized image the model saw (PNG, base64)")
    ] = False,
) -> JSONResponse:
    classifier = pool.get(model)
    pool.check_capacity()  # refused before a byte of the body is read
    with pool.body_budget.reserve() as reservation:
        body = await classifier.classify(
            request, include_quantized, admit=pool.admit, reservation=reservation
        )
    return JSONResponse(body)
