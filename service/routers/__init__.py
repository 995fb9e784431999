"""One router per area; ``include_routers`` is the one place that mounts them.

The admin area (``admin``) carries its access check once, as a router-level
dependency (``APIRouter(..., dependencies=[Depends(require_admin)])``), and is
mounted only when an admin token is configured.
"""

from __future__ import annotations

from fastapi import FastAPI

from service.routers import admin, classify, console, health, inference_v2, naive
from service.settings import ServiceSettings


def include_routers(app: FastAPI, settings: ServiceSettings) -> None:
    app.include_router(health.router)
    app.include_router(console.router)
    app.include_router(classify.router)
    app.include_router(inference_v2.router)
    if settings.enable_naive_endpoint:
        app.include_router(naive.router)
    if settings.admin_enabled:
        app.include_router(admin.router)
