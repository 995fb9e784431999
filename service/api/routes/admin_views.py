"""What only the operator sees, beside the robustness checks (``admin``):

* ``GET /admin/models``: every loaded model with its device, its folder and its whole
  manifest (training settings and history, the paths of the machine it was trained on),
  which the public ``GET /models`` leaves out, and a summary of the report published with
  its weights (``service.jobs.published``). Admin token.
* ``GET /admin/models/{name}/published-report``: that report whole. Admin token, like every
  robustness figure the service shows, although the repository publishes it: what an
  operator deploys beside it (another model of the same weights, a folder of their own
  reports) is the operator's to show.
* ``GET /admin/metrics``: the robustness scrape, every ``qusec_robust*`` series (each
  model's robust accuracy from its last qualifying check, the check's time, the job
  queue), which the public ``/metrics`` leaves out. The read-only scrape token (for
  Prometheus) or the admin token.

Both are mounted with the admin routes, only when an admin token is configured.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from service.api.auth import require_admin, require_scraper
from service.api.deps import Metrics, Pool, Published
from service.api.schemas import FullModelList, PublishedReport, error_responses
from service.errors import NoPublishedReport
from service.jobs.published import PUBLISHED
from service.metrics import CONTENT_TYPE, ServiceMetrics

ModelName = Annotated[str, Path(min_length=1, max_length=200)]

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
async def full_models(pool: Pool, published: Published, metrics: Metrics) -> dict:
    models = []
    for classifier in pool.classifiers.values():
        chosen = published.get(classifier.name)
        summary = None if chosen is None else chosen.summary(_in_gauges(metrics, chosen.model))
        models.append({**classifier.describe_fully(), "published_report": summary})
    return {"default": pool.default_name, "ready": pool.ready, "models": models}


@models_router.get(
    "/models/{name}/published-report",
    summary="The robustness report published with a model's weights (docs/results/)",
    response_model=PublishedReport,
    responses=error_responses(404, 422, 503),
)
async def published_report(
    name: ModelName, pool: Pool, published: Published, metrics: Metrics
) -> dict:
    classifier = pool.lookup(name)
    chosen = published.get(classifier.name)
    if chosen is None:
        sha256 = classifier.manifest.weights_sha256
        problem = (
            f"no published report was made on the weights of model {classifier.name!r} "
            f"(sha256 {sha256[:12]}...)"
        )
        raise NoPublishedReport(problem, message=problem)
    summary = chosen.summary(_in_gauges(metrics, chosen.model))
    return {"model": chosen.model, **summary, "report": chosen.report}


def _in_gauges(metrics: ServiceMetrics, model: str) -> bool:
    return metrics.report_source(model) == PUBLISHED


scrape_router = APIRouter(dependencies=[Depends(require_scraper)])


@scrape_router.get("/admin/metrics", include_in_schema=False)
async def robustness_metrics(metrics: Metrics) -> Response:
    return Response(metrics.robustness_exposition(), media_type=CONTENT_TYPE)
