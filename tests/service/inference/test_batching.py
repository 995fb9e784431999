"""The micro-batcher on its own: grouping, equality with unbatched runs, load shedding."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
import torch

from models.checkpoint import load_checkpoint
from service.errors import NotReady, QueueFull
from service.inference import batching
from service.inference.batching import MicroBatcher


def recording_forward(calls: list[int]):
    def forward(batch: torch.Tensor) -> torch.Tensor:
        calls.append(len(batch))
        return batch.flatten(1).sum(dim=1, keepdim=True)

    return forward


def make_batcher(forward, **options) -> MicroBatcher:
    values = {"max_batch_size": 8, "max_wait_seconds": 0.05, "queue_size": 64}
    values.update(options)
    return MicroBatcher("test", forward, **values)


def test_concurrent_jobs_share_a_batch_and_get_their_own_rows() -> None:
    calls: list[int] = []

    async def scenario() -> list:
        batcher = make_batcher(recording_forward(calls))
        batcher.start()
        rows = [torch.full((1, 1, 2, 2), float(i)) for i in range(6)]
        results = await asyncio.gather(*(batcher.submit(r) for r in rows))
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert calls == [6]
    assert [float(r.outputs[0, 0]) for r in results] == [4.0 * i for i in range(6)]
    assert all(r.batch_rows == 6 for r in results)


def test_batches_never_exceed_the_maximum_and_keep_jobs_whole() -> None:
    calls: list[int] = []

    async def scenario() -> None:
        batcher = make_batcher(recording_forward(calls), max_batch_size=4)
        batcher.start()
        jobs = [torch.zeros(3, 1, 2, 2), torch.zeros(3, 1, 2, 2), torch.zeros(9, 1, 2, 2)]
        results = await asyncio.gather(*(batcher.submit(j) for j in jobs))
        assert [len(r.outputs) for r in results] == [3, 3, 9]
        await batcher.stop()

    asyncio.run(scenario())
    assert calls == [3, 3, 9]  # a job larger than the maximum runs alone, never split


def test_batched_outputs_match_unbatched_forward(checkpoints) -> None:
    model = load_checkpoint(checkpoints["mnist-tq2"]).model
    inputs = torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(0))

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(model(batch), dim=1)

    async def scenario() -> list:
        batcher = make_batcher(forward, max_batch_size=16)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(inputs[i : i + 1]) for i in range(12)))
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert results[0].batch_rows == 12
    with torch.inference_mode():
        for i, result in enumerate(results):
            alone = torch.softmax(model(inputs[i : i + 1]), dim=1)
            assert torch.argmax(alone) == torch.argmax(result.outputs)
            # Batch-size-dependent kernels may differ in the last float32 bit, no more.
            torch.testing.assert_close(result.outputs, alone, rtol=0, atol=1e-6)


def test_full_queue_is_refused_at_once() -> None:
    release = threading.Event()

    def blocked(batch: torch.Tensor) -> torch.Tensor:
        release.wait(10)
        return batch.flatten(1)[:, :1]

    async def scenario() -> None:
        batcher = make_batcher(blocked, max_batch_size=1, queue_size=1, max_wait_seconds=0)
        batcher.start()
        running = asyncio.ensure_future(batcher.submit(torch.zeros(1, 1, 1, 1)))
        await asyncio.sleep(0.05)  # the worker has taken it and is blocked in forward
        queued = asyncio.ensure_future(batcher.submit(torch.zeros(1, 1, 1, 1)))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.submit(torch.zeros(1, 1, 1, 1))
        release.set()
        await asyncio.gather(running, queued)
        await batcher.stop()

    asyncio.run(scenario())


def test_abandoned_jobs_are_not_computed() -> None:
    calls: list[int] = []
    release = threading.Event()

    def forward(batch: torch.Tensor) -> torch.Tensor:
        release.wait(10)
        calls.append(len(batch))
        return batch.flatten(1)[:, :1]

    async def scenario() -> None:
        batcher = make_batcher(forward, max_batch_size=1, max_wait_seconds=0)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(torch.zeros(1, 1, 1, 1)))
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await batcher.submit(torch.ones(1, 1, 1, 1))
        release.set()
        await first
        await batcher.stop()

    asyncio.run(scenario())
    assert calls == [1]


def test_stop_finishes_queued_jobs_then_refuses_new_ones() -> None:
    calls: list[int] = []

    async def scenario() -> None:
        batcher = make_batcher(recording_forward(calls), max_batch_size=2, max_wait_seconds=0)
        batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(torch.ones(1, 1, 1, 1))) for _ in range(5)]
        await asyncio.sleep(0)
        await batcher.stop()
        assert all(job.done() and not job.cancelled() for job in pending)
        with pytest.raises(NotReady):
            await batcher.submit(torch.ones(1, 1, 1, 1))

    asyncio.run(scenario())
    assert sum(calls) == 5


class _Later:
    """Deferred rows: made (and counted) only when the batch is formed."""

    def __init__(self, value: float, made: list[float], count: int = 1, fails: bool = False):
        self.value, self.made, self.count, self.fails = value, made, count, fails
        self.rows_made = count

    def rows(self) -> torch.Tensor:
        self.made.append(self.value)
        if self.fails:
            raise ValueError(f"cannot make rows {self.value}")
        return torch.full((self.rows_made, 1, 2, 2), self.value)


def test_deferred_rows_are_made_as_the_batch_forms_in_order_beside_ready_ones() -> None:
    calls: list[int] = []
    made: list[float] = []

    async def scenario() -> list:
        batcher = make_batcher(recording_forward(calls))
        batcher.start()
        jobs = [_Later(1.0, made), torch.full((1, 1, 2, 2), 2.0), _Later(3.0, made)]
        assert made == []  # nothing made before the batch runs
        results = await asyncio.gather(*(batcher.submit(j) for j in jobs))
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert calls == [3] and made == [1.0, 3.0]
    assert [float(r.outputs[0, 0]) for r in results] == [4.0, 8.0, 12.0]


def test_a_job_whose_rows_cannot_be_made_gets_its_error_and_the_batch_goes_on() -> None:
    calls: list[int] = []
    made: list[float] = []

    async def scenario() -> list:
        batcher = make_batcher(recording_forward(calls))
        batcher.start()
        wrong = _Later(5.0, made, count=1)
        wrong.rows_made = 2  # announces one row, makes two
        jobs = [_Later(1.0, made), _Later(2.0, made, fails=True), wrong, _Later(3.0, made)]
        outcomes = await asyncio.gather(*(batcher.submit(j) for j in jobs), return_exceptions=True)
        await batcher.stop()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert calls == [2]  # the two good jobs, in one batch
    assert float(outcomes[0].outputs[0, 0]) == 4.0 and float(outcomes[3].outputs[0, 0]) == 12.0
    assert isinstance(outcomes[1], ValueError) and "cannot make rows 2.0" in str(outcomes[1])
    assert isinstance(outcomes[2], RuntimeError) and "2 made, 1 announced" in str(outcomes[2])


def test_an_abandoned_deferred_job_is_never_made() -> None:
    made: list[float] = []
    entered, gate = threading.Event(), threading.Event()

    def slow(batch: torch.Tensor) -> torch.Tensor:
        entered.set()
        gate.wait(60)
        return batch.flatten(1)[:, :1]

    async def scenario() -> None:
        batcher = make_batcher(slow)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(torch.zeros(1, 1, 2, 2)))
        assert await asyncio.to_thread(entered.wait, 60)  # the first batch is running
        later = asyncio.ensure_future(batcher.submit(_Later(7.0, made)))
        await asyncio.sleep(0)
        assert batcher.depth == 1
        later.cancel()  # its requester gave up while the first batch ran
        gate.set()
        await first
        await batcher.stop()

    asyncio.run(scenario())
    assert made == []


def test_forward_errors_reach_every_waiter_and_the_worker_survives() -> None:
    failures = iter([True, False])

    def flaky(batch: torch.Tensor) -> torch.Tensor:
        if next(failures):
            raise RuntimeError("device lost")
        return batch.flatten(1)[:, :1]

    async def scenario() -> None:
        batcher = make_batcher(flaky)
        batcher.start()
        outcomes = await asyncio.gather(
            *(batcher.submit(torch.zeros(1, 1, 1, 1)) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(o, RuntimeError) for o in outcomes)
        assert (await batcher.submit(torch.zeros(1, 1, 1, 1))).batch_rows == 1
        await batcher.stop()

    asyncio.run(scenario())


def test_a_model_that_returns_the_wrong_number_of_rows_fails_every_waiter() -> None:
    def drops_a_row(batch: torch.Tensor) -> torch.Tensor:
        return batch.flatten(1).sum(dim=1, keepdim=True)[1:]

    async def scenario() -> list:
        batcher = make_batcher(drops_a_row)
        batcher.start()
        rows = [torch.full((1, 1, 2, 2), float(i)) for i in range(3)]
        results = await asyncio.gather(*(batcher.submit(r) for r in rows), return_exceptions=True)
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert len(results) == 3
    for result in results:
        assert isinstance(result, RuntimeError)
        assert "model test returned" in str(result)


# The waits below are a minute long: a batch that waited when it should not have would time
# the test out, and one that should wait cannot miss a job that comes a moment later.
LONG_WAIT = 60.0


async def wait_until_taken(batcher: MicroBatcher) -> None:
    """Until the worker has taken every queued job (it is then collecting or running)."""
    while batcher.depth:
        await asyncio.sleep(0.005)


async def assert_held_for_the_next(
    batcher: MicroBatcher, calls: list[int], then: Callable[[], None] = lambda: None
) -> None:
    """A job submitted now is taken and held, not run; after ``then``, the next job to
    come joins it in one batch of two."""
    before = list(calls)
    first = asyncio.ensure_future(batcher.submit(torch.zeros(1, 1, 1, 1)))
    await wait_until_taken(batcher)
    await asyncio.sleep(0.05)  # the worker is waiting, not running a batch of one
    assert calls == before
    then()
    second = await batcher.submit(torch.zeros(1, 1, 1, 1))
    assert (await first).batch_rows == second.batch_rows == 2


def test_a_lone_request_goes_at_once_when_nothing_is_on_its_way() -> None:
    calls: list[int] = []

    async def scenario() -> None:
        batcher = make_batcher(recording_forward(calls), max_wait_seconds=LONG_WAIT)
        batcher.start()
        async with asyncio.timeout(LONG_WAIT / 2):
            result = await batcher.submit(torch.zeros(1, 1, 1, 1))
        assert result.batch_rows == 1
        await batcher.stop()

    asyncio.run(scenario())
    assert calls == [1]


def test_a_partial_batch_waits_for_a_request_being_read() -> None:
    calls: list[int] = []
    on_its_way = [1]

    async def scenario() -> None:
        batcher = make_batcher(
            recording_forward(calls), max_wait_seconds=LONG_WAIT, upstream=lambda: on_its_way[0]
        )
        batcher.start()
        await assert_held_for_the_next(batcher, calls, then=lambda: on_its_way.__setitem__(0, 0))
        await batcher.stop()

    asyncio.run(scenario())
    assert calls == [2]


def test_a_partial_batch_waits_for_the_clients_just_answered() -> None:
    """Two requests answered together: the next one to come waits for the other's return."""
    calls: list[int] = []

    async def scenario() -> None:
        batcher = make_batcher(recording_forward(calls), max_wait_seconds=LONG_WAIT)
        batcher.start()
        await asyncio.gather(*(batcher.submit(torch.zeros(1, 1, 1, 1)) for _ in range(2)))
        assert calls == [2]
        await assert_held_for_the_next(batcher, calls)  # held for the other's return
        await batcher.stop()

    asyncio.run(scenario())
    assert calls == [2, 2]


def test_a_client_sending_one_request_after_another_is_never_held() -> None:
    """Each answer is followed by one request, which is the return that was expected."""
    calls: list[int] = []

    async def scenario() -> None:
        batcher = make_batcher(recording_forward(calls), max_wait_seconds=LONG_WAIT)
        batcher.start()
        async with asyncio.timeout(LONG_WAIT / 2):
            for _ in range(5):
                assert (await batcher.submit(torch.zeros(1, 1, 1, 1))).batch_rows == 1
        await batcher.stop()

    asyncio.run(scenario())
    assert calls == [1] * 5


def test_clients_that_went_away_hold_at_most_one_batch_s_worth() -> None:
    calls: list[int] = []

    async def scenario() -> MicroBatcher:
        batcher = make_batcher(recording_forward(calls), max_batch_size=3, max_wait_seconds=0)
        batcher.start()
        for _ in range(4):  # four batches of three answered, none of their clients back
            await asyncio.gather(*(batcher.submit(torch.zeros(1, 1, 1, 1)) for _ in range(3)))
        await batcher.stop()
        return batcher

    batcher = asyncio.run(scenario())
    assert calls == [3, 3, 3, 3]
    assert batcher._returning == 3


def test_making_many_rows_lets_the_loop_serve_in_between(monkeypatch) -> None:
    # Past the turn's time, the loop gets a turn between two jobs' rows (here at once).
    monkeypatch.setattr(batching, "MAKE_ROWS_TURN_SECONDS", 0.0)
    seen: list[bool] = []
    served = asyncio.Event()

    class Noting(_Later):
        def rows(self) -> torch.Tensor:
            seen.append(served.is_set())
            asyncio.get_running_loop().call_soon(served.set)
            return super().rows()

    async def scenario() -> None:
        batcher = make_batcher(recording_forward([]))
        batcher.start()
        made: list[float] = []
        await asyncio.gather(*(batcher.submit(Noting(float(i), made)) for i in range(3)))
        await batcher.stop()

    asyncio.run(scenario())
    assert seen == [False, True, True]
