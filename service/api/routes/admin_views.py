"""What only the operator sees, beside the robustness checks (``admin``):

* ``GET /admin/models``: every loaded model with its device, its folder and its whole
  manifest (training settings and history, the paths of the machine it was trained on),
  which the public ``GET /models`` leaves out. Admin token.
* ``GET /admin/metrics``: the robustness scrape, every ``qusec_robust*`` series (each
  model's robust accuracy from its last qualifying check, the check's time, the job
  queue), which the public ``/metrics`` leaves out. The read-only scrape token (for
  Prometheus) or the admin token.

Both are mounted with the admin routes, only when an admin token is configured.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from service.api.auth import require_admin, require_scraper
from service.api.deps import Metrics, Pool
from service.api.schemas import FullModelList, error_responses
from service.metrics import CONTENT_TYPE

models_router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=error_responses(401, 403),
)


@models_router.get(
    "/models",
    summary="Loaded models with their device, folder and whole manifest",
    response_model=FullModelList,
    responses=error_responses(503),
)
async def full_models(pool: Pool) -> dict:
    return {
        "default": pool.default_name,
        "ready": pool.ready,
        "models": [classifier.describe_fully() for classifier in pool.classifiers.values()],
    }


scrape_router = APIRouter(dependencies=[Depends(require_scraper)])


@scrape_router.get("/admin/metrics", include_in_schema=False)
async def robustness_metrics(metrics: Metrics) -> Response:
    return Response(metrics.robustness_exposition(), media_type=CONTENT_TYPE)
