"""Dynamic micro-batching in front of one inference worker thread.

Requests put jobs (one or more input rows each) on a bounded queue and await a
future. One asyncio task collects jobs into a batch, up to ``max_batch_size``
rows or until ``max_wait_seconds`` passed since the first job, and runs the
forward on a single dedicated thread, so the event loop keeps accepting
requests while the model runs and the next batch fills meanwhile. A full
queue is refused at once (``QueueFull``, 503), never waited on. Jobs whose
requester gave up (timeout, cancellation) are skipped, not computed.

A partial batch waits only for requests known or expected to be on their way,
so a lone request at low load is not delayed for nothing:

* requests being read or decoded (``upstream``);
* requests expected back from the clients a batch just answered. Most clients
  that keep the service busy hold a fixed number of requests in flight (a load
  balancer's connections, a batch job's workers): each answer is followed by the
  next request. For ``max_wait_seconds`` after a batch is answered, its jobs count
  as returning, and each job that comes in takes one off, whichever client sent
  it. Without this the answers of one batch come back while a small batch of
  stragglers runs, and batches alternate large and small, which costs more per
  row: on one core the CIFAR ResNet-20 takes about 2.2 and 1.9 ms a row in
  batches of 1 and 2, 1.5 to 1.7 in batches of 6 to 8 (``docs/service.md``).

A job may hand over its rows still to be made (``Deferred``: a small upload still to be
decoded): they are made on the event loop when its batch is formed, one job after the
other, just before the forward. Made back to back, the same few routines run hot: the
event loop spent about 7% less a request than when each request decoded its own between
everything else a request does (about 13 us of a decode that took 55, ``docs/service.md``).
The loop is let go between two jobs once ``MAKE_ROWS_TURN_SECONDS`` have passed, so that a
batch of many small uploads does not hold it longer than one did. A job whose rows cannot
be made gets that error, and the batch goes on without it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import torch

from service.errors import NotReady, QueueFull
from service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

Forward = Callable[[torch.Tensor], torch.Tensor]


class Deferred(Protocol):
    """Rows to be made when the job's batch is formed (``MicroBatcher.submit``)."""

    count: int  # the rows it will make

    def rows(self) -> torch.Tensor:
        """The (count, C, H, W) rows; raises when they cannot be made (the job's error)."""
        ...


@dataclass(frozen=True)
class BatchResult:
    outputs: torch.Tensor  # (n, K): this job's rows of the batch output
    queue_wait_seconds: float
    inference_seconds: float
    batch_rows: int


@dataclass(eq=False)
class _Job:
    rows: torch.Tensor | Deferred  # (n, C, H, W), or still to be made
    count: int  # n (read once: ``len`` of a tensor is a Python call of torch's)
    future: asyncio.Future[BatchResult]
    enqueued_at: float = field(default_factory=time.perf_counter)

    @property
    def deferred(self) -> bool:
        return not isinstance(self.rows, torch.Tensor)


_STOP = object()
# Deferred rows made in one turn of the event loop, at most about this long (see above).
MAKE_ROWS_TURN_SECONDS = 0.001


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
        # Jobs of answered batches not yet followed by a new one, until the given time.
        self._returning = 0
        self._returning_until = 0.0

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

    async def submit(self, rows: torch.Tensor | Deferred) -> BatchResult:
        """Queue ``rows`` (n, C, H, W, or ``Deferred``) and wait for their outputs.

        The caller bounds the wait (``asyncio.timeout``); cancelling the wait
        cancels the job, which the worker then skips.
        """
        if self._closing or self._queue is None:
            raise NotReady(f"model {self.name} is not accepting work")
        count = len(rows) if isinstance(rows, torch.Tensor) else rows.count
        job = _Job(rows, count, asyncio.get_running_loop().create_future())
        if self._returning:
            self._returning -= 1
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
        # Waiting only pays when more work is known to be on its way (see the module's
        # docstring); otherwise a partial batch goes now instead of idling the worker.
        if remaining <= 0 or not (self._upstream() or self._expecting_returns()):
            return None
        try:
            async with asyncio.timeout(remaining):
                return await self._queue.get()
        except TimeoutError:
            return None

    def _expecting_returns(self) -> bool:
        return self._returning > 0 and time.perf_counter() < self._returning_until

    def _answered(self, jobs: int) -> None:
        """Count ``jobs`` just answered as returning for the next ``max_wait_seconds``,
        besides those still expected from earlier batches (at most a full batch's worth,
        so clients that went away cannot keep every batch waiting)."""
        still = self._returning if self._expecting_returns() else 0
        self._returning = min(still + jobs, self.max_batch_size)
        self._returning_until = time.perf_counter() + self.max_wait_seconds

    async def _execute(self, jobs: list[_Job]) -> None:
        live = [job for job in jobs if not job.future.done()]
        if any(job.deferred for job in live):
            live = await self._make_rows(live)
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
        self._answered(len(live))
        offset = 0
        for job in live:
            count = job.count
            if not job.future.done():
                result = BatchResult(
                    outputs[offset : offset + count], started - job.enqueued_at, elapsed, len(batch)
                )
                job.future.set_result(result)
            offset += count

    @staticmethod
    async def _make_rows(jobs: list[_Job]) -> list[_Job]:
        """Make each deferred job's rows; the jobs whose rows are there, in order."""
        ready = []
        turn_started = time.perf_counter()
        for job in jobs:
            if time.perf_counter() - turn_started > MAKE_ROWS_TURN_SECONDS:
                await asyncio.sleep(0)  # let the loop serve its sockets in between
                turn_started = time.perf_counter()
            if job.future.done():  # its requester gave up meanwhile
                continue
            if job.deferred:
                try:
                    rows = job.rows.rows()  # type: ignore[union-attr]
                except Exception as exc:  # its error (a corrupt image: 400), not the batch's
                    job.future.set_exception(exc)
                    continue
                if len(rows) != job.count:  # it would take another job's outputs
                    job.future.set_exception(
                        RuntimeError(f"deferred rows: {len(rows)} made, {job.count} announced")
                    )
                    continue
                job.rows = rows
            ready.append(job)
        return ready

    def _on_worker_exit(self, task: asyncio.Task) -> None:
        self._closing = True  # later submits get a 503 instead of waiting for nobody
        if not task.cancelled() and task.exception() is not None:
            log.error("batcher %s died", self.name, exc_info=task.exception())
