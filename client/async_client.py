"""``AsyncClient``: the same routes as ``Client``, awaited over one ``httpx.AsyncClient``.

Every method takes the same arguments as its ``Client`` namesake and returns the same
result; the calls themselves are shared (``client.calls``), only the sending differs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypeVar

import httpx

import client.calls as calls
from client.calls import DEFAULT_URL, Call, CheckFollower, ProgressCallback
from client.errors import CheckTimeout
from client.results import Classification, ModelList, RobustnessJob

T = TypeVar("T")


class AsyncClient:
    """A QuSec service at ``base_url``, for asyncio code; see ``Client``.

    ``on_progress`` may be a plain function or a coroutine function."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        admin_token: str | None = None,
        timeout: float | httpx.Timeout = 30.0,
        **httpx_options: Any,
    ) -> None:
        self.admin_token = admin_token
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout, **httpx_options)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _send(self, call: Call[T]) -> T:
        return call.result(await self.http.request(**call.request(self.admin_token)))

    async def classify(
        self,
        image: Any,
        *,
        model: str | None = None,
        include_quantized: bool = False,
        include_input: bool = False,
    ) -> Classification:
        return await self._send(calls.classify(image, model, include_quantized, include_input))

    async def models(self) -> ModelList:
        return await self._send(calls.models())

    async def ready(self) -> bool:
        return await self._send(calls.ready())

    async def submit_check(
        self, model: str | None = None, *, upload: Any = None, **request: Any
    ) -> RobustnessJob:
        return await self._send(calls.submit_check(model, upload, request))

    async def get_check(self, job_id: str) -> RobustnessJob:
        return await self._send(calls.get_check(job_id))

    async def list_checks(self, limit: int = 50, status: str | None = None) -> list[RobustnessJob]:
        return await self._send(calls.list_checks(limit, status))

    async def cancel_check(self, job_id: str) -> RobustnessJob:
        return await self._send(calls.cancel_check(job_id))

    async def wait_for_check(
        self,
        job_id: str,
        on_progress: ProgressCallback | None = None,
        *,
        poll_seconds: float = 0.5,
        timeout: float | None = None,
    ) -> RobustnessJob:
        follower = CheckFollower(on_progress)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.get_check(job_id)
            finished = follower.see(job)
            if follower.pending is not None:
                await follower.pending
            if finished:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise CheckTimeout(job_id, job.status)
            await asyncio.sleep(poll_seconds)

    async def run_check(
        self,
        model: str | None = None,
        *,
        upload: Any = None,
        on_progress: ProgressCallback | None = None,
        poll_seconds: float = 0.5,
        timeout: float | None = None,
        **request: Any,
    ) -> RobustnessJob:
        job = await self.submit_check(model, upload=upload, **request)
        return await self.wait_for_check(
            job.id, on_progress, poll_seconds=poll_seconds, timeout=timeout
        )
