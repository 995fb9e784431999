"""Liveness, readiness, the loaded models and the Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from service.api.deps import Metrics, Pool
from service.api.schemas import Liveness, ModelList, Readiness, error_responses
from service.metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    summary="Liveness: the process answers and its models can run",
    response_model=Liveness,
    responses={503: {"model": Liveness, "description": "a model can no longer run"}},
)
async def healthz(request: Request) -> JSONResponse:
    pool = request.app.state.pool
    if pool is not None and pool.failure is not None:
        return JSONResponse({"status": "failed", "error": pool.failure}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    summary="Readiness: models loaded and warmed up",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "still loading or warming up"}},
)
async def readyz(request: Request) -> JSONResponse:
    # Answered directly, not raised: a probe polling during startup is not a rejection.
    pool = request.app.state.pool
    if pool is None or not pool.ready:
        return JSONResponse({"status": "not_ready"}, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse({"status": "ready", "models": list(pool.classifiers)})


@router.get(
    "/models",
    summary="Loaded models: what a client needs to use each",
    response_model=ModelList,
    responses=error_responses(503),
)
async def models(pool: Pool) -> dict:
    return {
        "default": pool.default_name,
        "ready": pool.ready,
        "models": [classifier.describe() for classifier in pool.classifiers.values()],
    }


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(metrics: Metrics) -> Response:
    """The public scrape: serving only; robustness figures are on ``/admin/metrics``."""
    return Response(metrics.exposition(), media_type=CONTENT_TYPE)
