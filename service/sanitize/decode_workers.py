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
from dataclasses import asdict

import numpy as np

from service.errors import (
    BadChecksum,
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


class DecodeWorkers:
    def __init__(
        self,
        count: int,
        timeout_seconds: float,
        max_memory_bytes: int,
        recycle_rss_bytes: int,
    ) -> None:
        self.count = count
        self.timeout_seconds = timeout_seconds
        self.max_memory_bytes = max_memory_bytes
        self.recycle_rss_bytes = recycle_rss_bytes
        self._idle: list[_Worker] = []
        self._free = asyncio.Semaphore(count)
        self._all: set[_Worker] = set()
        self.killed = 0  # workers killed at the deadline or found dead

    async def decode(self, data: bytes, policy: ImagePolicy) -> DecodedImage:
        """Decode in a worker within the budget; waiting for a free worker is bounded
        by the caller's own deadline."""
        async with self._free:
            try:
                worker = self._idle.pop() if self._idle else await self._spawn()
            except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as exc:
                raise RuntimeError(f"could not start a decode worker: {exc!r}") from exc
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
                self._release(worker, healthy and not getattr(worker, "recycle", False))

    def _release(self, worker: _Worker, reuse: bool) -> None:
        if reuse and worker.process.returncode is None:
            self._idle.append(worker)
            return
        # Killed mid-task (deadline, cancellation, failure) or asked to be recycled.
        if not getattr(worker, "recycle", False):
            self.killed += 1
        worker.kill()
        self._all.discard(worker)
        task = asyncio.get_running_loop().create_task(worker.process.wait())
        task.add_done_callback(lambda _: None)

    async def _spawn(self) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service.sanitize.decode_worker",
            "--max-memory-bytes",
            str(self.max_memory_bytes),
            "--recycle-rss-bytes",
            str(self.recycle_rss_bytes),
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
        self._all.clear()
        self._idle.clear()


def _worker_environment() -> dict[str, str]:
    # One thread each: a worker decodes one image at a time, and the cores are shared.
    return {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
