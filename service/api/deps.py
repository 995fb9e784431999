"""Injected objects as ``Annotated`` aliases, so handlers declare what they use.

The providers are ``async`` on purpose: FastAPI runs plain functions on its
thread pool, and a thread hop per dependency per request is pure overhead here.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.errors import NotReady
from service.inference.pool import ClassifierPool
from service.jobs.published import PublishedReport
from service.metrics import ServiceMetrics
from service.settings import ServiceSettings


async def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


async def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


async def get_pool(request: Request) -> ClassifierPool:
    pool = request.app.state.pool
    if pool is None:
        raise NotReady("the model pool has not been loaded yet")
    return pool


async def get_published(request: Request) -> dict[str, PublishedReport]:
    """model -> the report published with its weights (read at startup; admin only)."""
    return request.app.state.published


Settings = Annotated[ServiceSettings, Depends(get_settings)]
Metrics = Annotated[ServiceMetrics, Depends(get_metrics)]
Pool = Annotated[ClassifierPool, Depends(get_pool)]
Published = Annotated[dict[str, PublishedReport], Depends(get_published)]
