"""The decode lanes and the per-client cost cap, with stand-in workers that decode on cue."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.errors import ClientDecodeLimit
from service.sanitize import decode_workers
from service.sanitize.decode_workers import DecodeWorkers
from service.sanitize.imaging import DecodedImage, ImagePolicy

POLICY = ImagePolicy(input_shape=(1, 28, 28), max_pixels=1 << 24, max_side=8192)
HEAVY = 1000  # the heavy threshold these tests use


class _Process:
    returncode = None
    pid = 0

    def kill(self) -> None:
        self.returncode = -9

    async def wait(self) -> int:
        return -9


class _Worker:
    """Decodes an upload once the test sets the event the upload's bytes name."""

    def __init__(self, nice: int, cues: dict[bytes, asyncio.Event]) -> None:
        self.process, self.nice, self.cues = _Process(), nice, cues

    async def decode(self, data: bytes, policy: ImagePolicy) -> DecodedImage:
        await self.cues.setdefault(data, asyncio.Event()).wait()
        return DecodedImage(np.zeros(policy.input_shape, np.float32), {"nice": self.nice})


def _workers(monkeypatch, count: int = 2, per_client: int = 0):
    cues: dict[bytes, asyncio.Event] = {}
    workers = DecodeWorkers(
        count, 60, 1 << 30, 1 << 30, heavy_cost=HEAVY, heavy_nice=10, max_cost_per_client=per_client
    )

    async def spawn(nice: int) -> _Worker:
        return _Worker(nice, cues)

    monkeypatch.setattr(workers, "_spawn", spawn)
    monkeypatch.setattr(decode_workers, "_Worker", _Worker)
    return workers, cues


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_heavy_uploads_take_turns_while_light_ones_pass(monkeypatch) -> None:
    async def scenario() -> list[str]:
        workers, cues = _workers(monkeypatch)
        order: list[str] = []

        async def upload(name: str, cost: int) -> None:
            await workers.decode(name.encode(), POLICY, cost, name)
            order.append(name)

        tasks = [asyncio.create_task(upload(n, HEAVY)) for n in ("bomb-1", "bomb-2")]
        await _settle()
        light = [asyncio.create_task(upload(f"light-{i}", HEAVY - 1)) for i in range(3)]
        for i in range(3):
            cues.setdefault(f"light-{i}".encode(), asyncio.Event()).set()
        await asyncio.gather(*light)  # served while bomb-1 holds the heavy lane
        assert workers.heavy.busy == 1 and len(workers.heavy.waiters) == 1
        cues.setdefault(b"bomb-2", asyncio.Event()).set()  # ready, but not its turn yet
        await _settle()
        assert order == ["light-0", "light-1", "light-2"]
        cues.setdefault(b"bomb-1", asyncio.Event()).set()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(scenario()) == ["light-0", "light-1", "light-2", "bomb-1", "bomb-2"]


def test_a_light_upload_borrows_an_idle_heavy_worker(monkeypatch) -> None:
    async def scenario() -> dict:
        workers, cues = _workers(monkeypatch)
        first = asyncio.create_task(workers.decode(b"slow", POLICY, 1, "a"))
        await _settle()
        cues[b"quick"] = asyncio.Event()
        cues[b"quick"].set()
        borrowed = await workers.decode(b"quick", POLICY, 1, "a")  # the light worker is busy
        cues[b"slow"].set()
        await first
        return borrowed.facts

    assert asyncio.run(scenario()) == {"nice": 10}  # the heavy lane's worker, niced


def test_a_client_may_have_only_so_much_decode_work_in_flight(monkeypatch) -> None:
    async def scenario() -> None:
        workers, cues = _workers(monkeypatch, per_client=1500)
        held = asyncio.create_task(workers.decode(b"big", POLICY, 1200, "hog"))
        await _settle()
        with pytest.raises(ClientDecodeLimit):
            await workers.decode(b"more", POLICY, 400, "hog")
        cues[b"other"] = asyncio.Event()
        cues[b"other"].set()
        await workers.decode(b"other", POLICY, 900, "neighbour")  # its own share
        cues[b"big"].set()
        await held
        assert workers.cost_by_client == {}
        # Alone, one upload always passes, whatever it costs.
        cues[b"huge"] = asyncio.Event()
        cues[b"huge"].set()
        await workers.decode(b"huge", POLICY, 10**9, "hog")

    asyncio.run(scenario())


def test_a_waiter_that_gives_up_does_not_keep_its_turn(monkeypatch) -> None:
    async def scenario() -> None:
        workers, cues = _workers(monkeypatch)
        first = asyncio.create_task(workers.decode(b"first", POLICY, HEAVY, "a"))
        await _settle()
        impatient = asyncio.create_task(workers.decode(b"impatient", POLICY, HEAVY, "b"))
        await _settle()
        impatient.cancel()
        cues[b"first"].set()
        await first
        cues[b"next"] = asyncio.Event()
        cues[b"next"].set()
        await asyncio.wait_for(workers.decode(b"next", POLICY, HEAVY, "c"), 60)
        assert workers.heavy.busy == 0 and workers.light.busy == 0

    asyncio.run(scenario())
