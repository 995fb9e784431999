"""One router per area; ``include_routers`` is the one place that mounts them.

The admin area (``admin``, ``admin_views``) carries its access check once per router,
as a router-level dependency (``APIRouter(..., dependencies=[Depends(require_admin)])``),
and is mounted only when an admin token is configured.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.routing import BaseRoute

from service.api.routes import (
    admin,
    admin_views,
    classify,
    console,
    docs,
    health,
    inference_v2,
    naive,
)
from service.settings import ServiceSettings


def include_routers(app: FastAPI, settings: ServiceSettings) -> None:
    routers = [health.router, console.router, docs.router, classify.router, inference_v2.router]
    if settings.enable_naive_endpoint:
        routers.append(naive.router)
    if settings.admin_enabled:
        routers += [admin.router, admin_views.models_router, admin_views.scrape_router]
    for router in routers:
        app.include_router(router)
    # Each path's methods, for the Allow header of a 405 (see service.errors).
    routes = [*app.router.routes, *(route for router in routers for route in router.routes)]
    app.state.route_methods = [
        (route.path_regex, frozenset(route.methods))
        for route in routes
        if isinstance(route, BaseRoute) and getattr(route, "methods", None)
    ]


def fast_routes() -> dict[tuple[str, str], tuple[BaseRoute, Any]]:
    """The routes served in front of FastAPI's layers (``service.app.ServiceApp``):
    (method, path) -> (route, ASGI call).

    The route is kept for the metrics' ``endpoint`` label, as if FastAPI had matched it."""
    return {("POST", "/classify"): (_classify_route(), classify.serve)}


def express_routes() -> dict[tuple[str, str], tuple[BaseRoute, Any]]:
    """The routes answered as express requests when they have all arrived
    (``service.api.express``): (method, path) -> (route, ``respond(app, request)``)."""
    return {("POST", "/classify"): (_classify_route(), classify.serve_express)}


def _classify_route() -> BaseRoute:
    (route,) = [r for r in classify.router.routes if getattr(r, "path", None) == "/classify"]
    return route
