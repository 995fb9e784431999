"""The Open Inference Protocol (KServe v2) REST endpoints, for KServe/Triton clients."""

from __future__ import annotations

import asyncio
from importlib import metadata

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.body import read_bounded
from service.deps import Pool, Settings
from service.inference_protocol import infer_response, model_metadata, parse_infer_request

router = APIRouter(prefix="/v2", tags=["open inference protocol"])


def _version() -> str:
    try:
        return metadata.version("qusec")
    except metadata.PackageNotFoundError:
        return "unknown"


@router.get("", summary="Server metadata")
async def server_metadata() -> dict:
    return {"name": "qusec", "version": _version(), "extensions": []}


@router.get("/health/live", summary="Server liveness")
async def live() -> dict:
    return {"live": True}


@router.get("/health/ready", summary="Server readiness")
async def ready(request: Request) -> JSONResponse:
    pool = request.app.state.pool
    is_ready = pool is not None and pool.ready
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/models/{name}", summary="Model metadata")
async def metadata_of(name: str, pool: Pool) -> dict:
    return model_metadata(pool.lookup(name))


@router.get("/models/{name}/ready", summary="Model readiness")
async def model_ready(name: str, pool: Pool) -> JSONResponse:
    pool.lookup(name)
    return JSONResponse({"name": name, "ready": pool.ready}, status_code=200 if pool.ready else 503)


@router.post("/models/{name}/infer", summary="Infer on FP32 tensors in [0, 1]")
async def infer(name: str, request: Request, pool: Pool, settings: Settings) -> JSONResponse:
    classifier = pool.get(name)
    pool.check_capacity()  # refused before a byte of the body is read
    with pool.body_budget.reserve() as reservation:
        body = await read_bounded(
            request,
            settings.max_body_bytes,
            settings.body_read_timeout_seconds,
            min_rate=settings.body_min_rate_bytes_per_second,
            grace_seconds=settings.body_min_rate_grace_seconds,
            reservation=reservation,
        )
        with pool.admit():  # counted only once the body is in
            call = await asyncio.get_running_loop().run_in_executor(
                pool.decode_pool,
                parse_infer_request,
                body,
                classifier.input_shape,
                settings.max_infer_rows,
            )
            probabilities = await classifier.infer(call.rows)
    return JSONResponse(infer_response(classifier, call, probabilities))
