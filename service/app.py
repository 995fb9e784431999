"""The application factory. Nothing happens at import: settings, metrics and models
are built in ``create_app`` and its ``lifespan``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.auth import load_admin_token, load_scrape_token
from service.api.error_handlers import install_error_handlers, unexpected_error_response
from service.api.express import ExpressRoutes
from service.api.query import reject_unknown_query
from service.api.routes import classify, fast_routes, include_routers
from service.api.schemas import error_responses
from service.edge.middleware import RequestContextMiddleware, route_path
from service.errors import JobsUnavailable
from service.inference.pool import ClassifierPool
from service.jobs.manager import JobManager
from service.jobs.published import PublishedReport, find_published, seed_gauges
from service.metrics import ServiceMetrics
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

# How often a service whose job store could not be opened at startup tries again.
JOB_STORE_RETRY_SECONDS = 5.0


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load models (failing startup on any bad checkpoint), serve, then drain.

    Warm-up runs in the background: liveness answers at once, readiness only
    after every model has run the whole path. A supervised worker (``workers`` > 1)
    waits for it instead, since the port it shares would hand it requests at once.
    """
    started = time.perf_counter()
    settings: ServiceSettings = app.state.settings
    torch.set_num_threads(settings.torch_threads)
    pool = ClassifierPool(settings, app.state.metrics)
    try:
        pool.load()
    except BaseException:
        pool.decode_pool.shutdown(wait=False)
        raise
    pool.start()
    app.state.pool = pool
    await _start_jobs(app, settings, pool)
    warm_up = asyncio.create_task(pool.warm_up(started), name="warm-up")
    if settings.workers > 1:
        # A supervised worker shares its port with the others: it must not accept
        # connections (which uvicorn starts after this startup) before it can serve them.
        await asyncio.wait([warm_up])
        if not pool.ready:
            await _stop_jobs(app)
            await pool.stop()
            raise RuntimeError(f"worker not ready: {pool.failure}")
    try:
        yield
    finally:
        # The server has already finished in-flight requests; queued jobs are drained here.
        if not warm_up.done():
            warm_up.cancel()
        await asyncio.wait([warm_up])
        await _stop_jobs(app)
        await pool.stop()
        app.state.metrics.apply_pending()
        log.info("stopped")


async def _start_jobs(app: FastAPI, settings: ServiceSettings, pool: ClassifierPool) -> None:
    """The robustness-check jobs, when admin access is configured (else nothing runs)."""
    if not settings.admin_enabled:
        return
    try:
        # Before the store: a check that qualifies replaces a published report, never the
        # reverse; and the published figures show even while the store cannot be opened.
        app.state.published = await asyncio.to_thread(_published_reports, settings, pool)
        seed_gauges(app.state.metrics, app.state.published)
        app.state.admin_token = load_admin_token(settings)
        app.state.scrape_token = load_scrape_token(settings)
        jobs = await asyncio.to_thread(JobManager.open, settings, app.state.metrics, pool)
    except JobsUnavailable as exc:
        # Classification does not depend on the job database: it serves, the admin routes
        # answer 503 with this reason, and the store is tried again until it opens.
        log.error("robustness-check jobs unavailable: %s", exc.detail)
        app.state.jobs_problem = exc.message
        app.state.jobs_opener = asyncio.create_task(
            _open_jobs_later(app, settings, pool), name="job-store-opener"
        )
        return
    except BaseException:
        await pool.stop()
        raise
    jobs.start()
    app.state.jobs = jobs


def _published_reports(
    settings: ServiceSettings, pool: ClassifierPool
) -> dict[str, PublishedReport]:
    """Each served model's published report; a scan that fails costs the reports, not the
    service."""
    weights = {c.name: c.manifest.weights_sha256 for c in pool.classifiers.values()}
    try:
        return find_published(settings.published_reports, weights)
    except Exception as exc:
        log.error("published reports: the scan failed; none is used", exc_info=exc)
        return {}


async def _open_jobs_later(app: FastAPI, settings: ServiceSettings, pool: ClassifierPool) -> None:
    """Try the job store again until it opens (a database that was down at startup)."""
    while True:
        await asyncio.sleep(JOB_STORE_RETRY_SECONDS)
        try:
            jobs = await asyncio.to_thread(JobManager.open, settings, app.state.metrics, pool)
        except JobsUnavailable as exc:
            log.debug("robustness-check jobs still unavailable: %s", exc.detail)
            app.state.jobs_problem = exc.message
            continue
        except Exception as exc:  # the store opened but cannot be used (a newer schema)
            log.error("robustness-check jobs unavailable", exc_info=exc)
            app.state.jobs_problem = "the job store cannot be used; see the service's log"
            return
        jobs.start()
        app.state.jobs, app.state.jobs_problem = jobs, None
        log.warning("robustness-check jobs available: the job store opened")
        return


async def _stop_jobs(app: FastAPI) -> None:
    opener = app.state.jobs_opener
    if opener is not None:
        opener.cancel()
        await asyncio.wait([opener])
    if app.state.jobs is not None:
        await app.state.jobs.stop()


class ServiceApp(FastAPI):
    """FastAPI, with the routes of ``fast_routes`` served in front of all its own layers.

    ``POST /classify`` answers every error itself (``service.api.routes.classify.serve``),
    so it needs nothing FastAPI does per request: its outermost error layer, telemetry
    hooks, body limit, routing and dependency solving took about 6% of the request's
    event-loop time in py-spy's samples. It runs behind its own copy of the request
    context middleware (ids, access log, metrics), which answers an unexpected exception
    with the same 500 handler.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fast_routes: dict[tuple[str, str], ASGIApp] = {}  # (method, path) -> ASGI app
        # The connection layer's express hook (``service.api.express``); None: none.
        self.express: ExpressRoutes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            fast = self.fast_routes.get((scope["method"], route_path(scope)))
            if fast is not None:
                scope["app"] = self  # as Starlette sets it: handlers reach the state by it
                await fast(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: ServiceSettings | None = None) -> ServiceApp:
    settings = settings if settings is not None else ServiceSettings()
    metrics = ServiceMetrics(multiprocess=settings.workers > 1)
    app = ServiceApp(
        title="QuSec inference service",
        description="Image classifiers defended by QuSecNets input quantization.",
        lifespan=lifespan,
        # /docs and /redoc are served offline, with the console's security headers
        # (service/api/routes/docs.py), instead of FastAPI's pages that load a CDN.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        # Every route refuses query parameters it does not declare (400, naming them).
        dependencies=[Depends(reject_unknown_query)],
        responses=error_responses(400),
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.pool = None
    app.state.jobs = None
    app.state.jobs_opener = None
    app.state.admin_token = None
    app.state.scrape_token = None
    app.state.jobs_problem = None
    app.state.published = {}  # model -> PublishedReport, read at startup with admin access
    install_error_handlers(app, settings.retry_after_seconds)
    include_routers(app, settings)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    app.fast_routes = {
        key: RequestContextMiddleware(endpoint, metrics, route, unexpected_error_response)
        for key, (route, endpoint) in fast_routes().items()
    }
    app.express = ExpressRoutes(app, metrics)
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document of its own routes, plus ``POST /classify`` (a plain ASGI route)."""
    if app.openapi_schema is None:
        classify.document(FastAPI.openapi(app))
    return app.openapi_schema
