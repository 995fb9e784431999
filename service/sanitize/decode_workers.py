"""The decode budget: uploads that are not tiny are decoded in killable worker processes.

A decoder running on a thread cannot be stopped: a file built to be expensive
(a progressive JPEG whose scans repeat, a huge canvas that compresses to nothing)
would hold the thread, and every upload behind it, for as long as it likes. Here
each decode runs in one of ``count`` worker processes (``service.sanitize.decode_worker``,
started on first use) and must answer within ``timeout_seconds``; a worker that
does not is killed, replaced, and the upload refused with
``decode_budget_exceeded``. A worker's address space is capped, so a file's memory
claim is paid there, never in the service, and a worker that grew is recycled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections import deque
from dataclasses import asdict

import numpy as np

from service.errors import (
    BadChecksum,
    ClientDecodeLimit,
    CorruptImage,
    DecodeBudgetExceeded,
    EmptyBody,
    ImageTooLarge,
    InconsistentFrame,
    ServiceError,
    TooManyScans,
    TrailingData,
    UnsupportedFormat,
)
from service.sanitize.imaging import DecodedImage, ImagePolicy

log = logging.getLogger(__name__)

# The refusals a worker may report; anything else it says is treated as a corrupt image.
_ERRORS: dict[str, type[ServiceError]] = {
    t.reason: t
    for t in (
        BadChecksum,
        CorruptImage,
        DecodeBudgetExceeded,
        EmptyBody,
        ImageTooLarge,
        InconsistentFrame,
        TooManyScans,
        TrailingData,
        UnsupportedFormat,
    )
}
WORKER_START_SECONDS = 120.0
# The answer's JSON line is small; a longer one means the worker is not ours any more.
_MAX_HEADER_BYTES = 64 * 1024


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def decode(self, data: bytes, policy: ImagePolicy) -> DecodedImage:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        header = {"size": len(data), "policy": asdict(policy)}
        stdin.write(json.dumps(header).encode() + b"\n")
        stdin.write(data)
        await stdin.drain()
        answer = json.loads(await stdout.readuntil(b"\n"))
        self.recycle = bool(answer.get("recycle"))
        if not answer["ok"]:
            error = _ERRORS.get(answer.get("reason"), CorruptImage)
            raise error(str(answer.get("detail", ""))[:500])
        shape = tuple(answer["shape"])
        if shape != policy.input_shape:
            raise ValueError(f"decode worker answered shape {shape}, not {policy.input_shape}")
        levels = np.frombuffer(await stdout.readexactly(int(np.prod(shape))), dtype=np.uint8)
        pixels = levels.reshape(shape).astype(np.float32) / 255.0
        return DecodedImage(pixels, dict(answer["facts"]))

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


class _Lane:
    """Decode processes kept for one kind of upload: at most ``size`` busy at once."""

    def __init__(self, name: str, size: int, nice: int) -> None:
        self.name = name
        self.size = size
        self.nice = nice
        self.idle: list[_Worker] = []
        self.busy = 0  # slots taken: workers decoding, or being started
        self.waiters: deque[asyncio.Future[_Lane]] = deque()

    def open(self) -> bool:
        return self.busy < self.size and not self.waiters


class DecodeWorkers:
    """The decode processes, in two lanes.

    Uploads whose estimated cost (``service.sanitize.decode_cost``) reaches
    ``heavy_cost`` are heavy: they take turns on at most ``heavy_processes`` workers,
    started with ``heavy_nice`` added niceness, so a stream of costly files never holds
    the workers the light ones use, nor their CPU. Light uploads use the other workers
    and borrow an idle heavy one. Each client's decodes queued or running may together
    cost at most ``max_cost_per_client`` (its first one always passes). With one
    worker there is one lane.
    """

    def __init__(
        self,
        count: int,
        timeout_seconds: float,
        max_memory_bytes: int,
        recycle_rss_bytes: int,
        *,
        heavy_cost: int = 1 << 62,
        heavy_processes: int = 1,
        heavy_nice: int = 0,
        max_cost_per_client: int = 0,
    ) -> None:
        self.count = count
        self.timeout_seconds = timeout_seconds
        self.max_memory_bytes = max_memory_bytes
        self.recycle_rss_bytes = recycle_rss_bytes
        self.heavy_cost = heavy_cost
        self.max_cost_per_client = max_cost_per_client
        if count > 1:
            self.light = _Lane("light", count - heavy_processes, 0)
            self.heavy = _Lane("heavy", heavy_processes, heavy_nice)
        else:
            self.light = self.heavy = _Lane("shared", 1, 0)
        self.cost_by_client: dict[str, int] = {}
        self._all: set[_Worker] = set()
        self._reaping: set[asyncio.Task] = set()  # killed workers whose exit is awaited
        self.killed = 0  # workers killed at the deadline or found dead

    async def decode(
        self, data: bytes, policy: ImagePolicy, cost: int = 0, client: str = ""
    ) -> DecodedImage:
        """Decode in a worker of the upload's lane within the budget; waiting for a worker
        is bounded by the caller's own deadline."""
        lane = self.heavy if cost >= self.heavy_cost else self.light
        self._charge(client, cost)
        try:
            slot = await self._acquire(lane)
            return await self._decode_in(slot, data, policy)
        finally:
            self._refund(client, cost)

    async def _decode_in(self, slot: _Lane, data: bytes, policy: ImagePolicy) -> DecodedImage:
        try:
            worker = slot.idle.pop() if slot.idle else await self._spawn(slot.nice)
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as exc:
            self._hand_on(slot)
            raise RuntimeError(f"could not start a decode worker: {exc!r}") from exc
        except BaseException:
            self._hand_on(slot)
            raise
        healthy = False
        try:
            async with asyncio.timeout(self.timeout_seconds):
                decoded = await worker.decode(data, policy)
            healthy = True
            return decoded
        except ServiceError:
            healthy = True
            raise
        except TimeoutError:
            raise DecodeBudgetExceeded(
                f"decode took longer than {self.timeout_seconds} s; worker killed"
            ) from None
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
            ValueError,
            KeyError,
            TypeError,
        ) as exc:
            # The worker died mid-task (its memory cap, a crash) or answered garbage.
            raise DecodeBudgetExceeded(f"decode worker failed: {type(exc).__name__}") from None
        finally:
            self._release(slot, worker, healthy and not getattr(worker, "recycle", False))

    # --- per-client cost ------------------------------------------------------------------

    def _charge(self, client: str, cost: int) -> None:
        held = self.cost_by_client.get(client, 0)
        limit = self.max_cost_per_client
        if limit and held > 0 and held + cost > limit:
            raise ClientDecodeLimit(
                f"client {client} has decodes costing {held} in flight; {cost} more pass {limit}",
                message="this client's decodes in flight are at their limit "
                f"({limit} bytes of estimated cost), retry later",
            )
        self.cost_by_client[client] = held + cost

    def _refund(self, client: str, cost: int) -> None:
        left = self.cost_by_client.get(client, 0) - cost
        if left > 0:
            self.cost_by_client[client] = left
        else:
            self.cost_by_client.pop(client, None)

    # --- lanes ----------------------------------------------------------------------------

    async def _acquire(self, lane: _Lane) -> _Lane:
        """A slot in ``lane`` (or, for a light upload, an idle heavy one), in arrival order."""
        for slot in (lane, self.heavy) if lane is self.light else (lane,):
            if slot.open():
                slot.busy += 1
                return slot
        handed: asyncio.Future[_Lane] = asyncio.get_running_loop().create_future()
        lane.waiters.append(handed)
        try:
            return await handed
        except BaseException:
            if handed.done() and not handed.cancelled():
                self._hand_on(handed.result())  # handed a slot, then cancelled: pass it on
            else:
                handed.cancel()
            raise

    def _hand_on(self, slot: _Lane) -> None:
        """Give a freed slot to the next waiter of its lane, or (a heavy slot) to a light
        upload waiting; else it is free."""
        queues = [slot.waiters] + ([self.light.waiters] if slot is not self.light else [])
        for waiters in queues:
            while waiters:
                handed = waiters.popleft()
                if not handed.done():
                    handed.set_result(slot)
                    return
        slot.busy -= 1

    def _release(self, slot: _Lane, worker: _Worker, reuse: bool) -> None:
        if reuse and worker.process.returncode is None:
            slot.idle.append(worker)
        else:
            # Killed mid-task (deadline, cancellation, failure) or asked to be recycled.
            if not getattr(worker, "recycle", False):
                self.killed += 1
            worker.kill()
            self._all.discard(worker)
            self._reap(worker)
        self._hand_on(slot)

    def _reap(self, worker: _Worker) -> None:
        """Wait for a killed worker in the background, so its pipes close while the loop
        runs; ``stop`` waits for what is still being reaped."""
        task = asyncio.get_running_loop().create_task(worker.process.wait())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def _spawn(self, nice: int) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service.sanitize.decode_worker",
            "--max-memory-bytes",
            str(self.max_memory_bytes),
            "--recycle-rss-bytes",
            str(self.recycle_rss_bytes),
            "--nice",
            str(nice),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=_MAX_HEADER_BYTES,
            env=_worker_environment(),
        )
        worker = _Worker(process)
        self._all.add(worker)
        try:
            # Starting an interpreter is not the upload's fault: not part of its deadline.
            async with asyncio.timeout(WORKER_START_SECONDS):
                ready = await process.stdout.readuntil(b"\n")  # type: ignore[union-attr]
            if json.loads(ready) != {"ready": True}:
                raise ValueError(f"unexpected first line from a decode worker: {ready[:80]!r}")
        except BaseException:
            self._all.discard(worker)
            worker.kill()
            self._reap(worker)
            raise
        return worker

    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._all]

    async def stop(self) -> None:
        for worker in list(self._all):
            if worker.process.stdin is not None:
                worker.process.stdin.close()
        for worker in list(self._all):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await worker.process.wait()
            worker.kill()
            self._reap(worker)
        self._all.clear()
        # Killed workers' pipes close only once their exit is seen: before the loop ends.
        if self._reaping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.gather(*self._reaping, return_exceptions=True)
        for lane in {self.light, self.heavy}:
            lane.idle.clear()


def _worker_environment() -> dict[str, str]:
    # One thread each: a worker decodes one image at a time, and the cores are shared.
    return {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
