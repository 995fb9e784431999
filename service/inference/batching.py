"""Dynamic micro-batching in front of one inference worker thread.

Requests put jobs (one or more input rows each) on a bounded queue and await a
future. One asyncio task collects jobs into a batch, up to ``max_batch_size``
rows or until ``max_wait_seconds`` passed since the first job, and runs the
forward on a single dedicated thread, so the event loop keeps accepting
requests while the model runs and the next batch fills meanwhile. The wait is
cut short when no request is upstream (being read or decoded), so a lone
request at low load is not delayed for nothing. A full
queue is refused at once (``QueueFull``, 503), never waited on. Jobs whose
requester gave up (timeout, cancellation) are skipped, not computed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from service.errors import NotReady, QueueFull
from service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BatchResult:
    outputs: torch.Tensor  # (n, K): this job's rows of the batch output
    queue_wait_seconds: float
    inference_seconds: float
    batch_rows: int


@dataclass(eq=False)
class _Job:
    rows: torch.Tensor  # (n, C, H, W)
    count: int  # n (read once: ``len`` of a tensor is a Python call of torch's)
    future: asyncio.Future[BatchResult]
    enqueued_at: float = field(default_factory=time.perf_counter)


_STOP = object()


class MicroBatcher:
    def __init__(
        self,
        name: str,
        forward: Forward,
        *,
        max_batch_size: int,
        max_wait_seconds: float,
        queue_size: int,
        torch_threads: int = 1,
        metrics: ServiceMetrics | None = None,
        upstream: Callable[[], int] | None = None,
    ) -> None:
        self.name = name
        self._forward = forward
        self.max_batch_size = max_batch_size
        self.max_wait_seconds = max_wait_seconds
        self._queue_size = queue_size
        self._torch_threads = torch_threads
        self._metrics = metrics
        self._upstream = upstream or (lambda: 0)
        self._queue: asyncio.Queue | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task | None = None
        self._carry: _Job | None = None
        self._closing = False

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        """Start the worker; must be called from the event loop that will submit."""
        self._queue = asyncio.Queue(maxsize=self._queue_size)
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"infer-{self.name}",
            initializer=torch.set_num_threads,
            initargs=(self._torch_threads,),
        )
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"batcher-{self.name}"
        )
        self._task.add_done_callback(self._on_worker_exit)
        if self._metrics is not None:
            self._metrics.track_queue_depth(self.name, lambda: self.depth)

    async def submit(self, rows: torch.Tensor) -> BatchResult:
        """Queue ``rows`` (n, C, H, W) and wait for their outputs.

        The caller bounds the wait (``asyncio.timeout``); cancelling the wait
        cancels the job, which the worker then skips.
        """
        if self._closing or self._queue is None:
            raise NotReady(f"model {self.name} is not accepting work")
        job = _Job(rows, len(rows), asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull(f"model {self.name}: {self._queue_size} jobs already queued") from None
        return await job.future

    async def stop(self) -> None:
        """Finish every queued job, then stop the worker thread."""
        if self._task is None or self._queue is None:
            return
        self._closing = True
        if not self._task.done():
            await self._queue.put(_STOP)  # behind every queued job
            await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        while True:
            jobs, stop = await self._collect()
            if jobs:
                await self._execute(jobs)
            if stop:
                return

    async def _collect(self) -> tuple[list[_Job], bool]:
        assert self._queue is not None
        first = self._carry if self._carry is not None else await self._queue.get()
        self._carry = None
        if first is _STOP:
            return [], True
        jobs, rows = [first], first.count
        deadline = time.perf_counter() + self.max_wait_seconds
        while rows < self.max_batch_size:
            job = await self._next_job(deadline)
            if job is None:
                break
            if job is _STOP:
                return jobs, True
            if rows + job.count > self.max_batch_size:
                self._carry = job  # opens the next batch
                break
            jobs.append(job)
            rows += job.count
        return jobs, False

    async def _next_job(self, deadline: float) -> _Job | object | None:
        assert self._queue is not None
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            pass
        remaining = deadline - time.perf_counter()
        # Waiting only pays when more work is known to be on its way (being read or
        # decoded); otherwise a partial batch goes now instead of idling the worker.
        if remaining <= 0 or self._upstream() == 0:
            return None
        try:
            async with asyncio.timeout(remaining):
                return await self._queue.get()
        except TimeoutError:
            return None

    async def _execute(self, jobs: list[_Job]) -> None:
        live = [job for job in jobs if not job.future.done()]
        if not live:
            return
        batch = live[0].rows if len(live) == 1 else torch.cat([job.rows for job in live])
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(self._executor, self._forward, batch)
            if outputs.ndim == 0 or len(outputs) != len(batch):
                # A model that drops or adds rows would hand each waiter another's answer.
                raise RuntimeError(
                    f"model {self.name} returned {tuple(outputs.shape)} for {len(batch)} rows"
                )
        except Exception as exc:
            # Handed to every waiter, whose handler logs it and answers 500.
            for job in live:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        elapsed = time.perf_counter() - started
        if self._metrics is not None:
            self._metrics.observe_batch(self.name, len(batch))
        offset = 0
        for job in live:
            count = job.count
            if not job.future.done():
                result = BatchResult(
                    outputs[offset : offset + count], started - job.enqueued_at, elapsed, len(batch)
                )
                job.future.set_result(result)
            offset += count

    def _on_worker_exit(self, task: asyncio.Task) -> None:
        self._closing = True  # later submits get a 503 instead of waiting for nobody
        if not task.cancelled() and task.exception() is not None:
            log.error("batcher %s died", self.name, exc_info=task.exception())
