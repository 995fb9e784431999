"""One router per area; ``include_routers`` is the one place that mounts them.

An admin area belongs here as its own module whose ``APIRouter`` carries the
access check once, as a router-level dependency
(``APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])``), and is
added to ``include_routers`` below.
"""

from __future__ import annotations

from fastapi import FastAPI

from service.routers import classify, health, inference_v2, naive
from service.settings import ServiceSettings


def include_routers(app: FastAPI, settings: ServiceSettings) -> None:
    app.include_router(health.router)
    app.include_router(classify.router)
    app.include_router(inference_v2.router)
    if settings.enable_naive_endpoint:
        app.include_router(naive.router)
