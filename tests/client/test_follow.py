"""How both clients follow a check: the callback sees each change of state once (no service)."""

from __future__ import annotations

import asyncio

from client.calls import CheckFollower
from client.results import RobustnessJob


def job(status: str, done: int, total: int = 4) -> RobustnessJob:
    return RobustnessJob.from_json(
        {
            "id": "j1",
            "status": status,
            "model": "mnist-tq2",
            "samples": "mnist-test-first1000.npz",
            "request": {},
            "time_budget_seconds": 60.0,
            "estimated_cost": 10,
            "created_at": None,
            "started_at": None,
            "finished_at": None,
            "progress": {"done_batches": done, "total_batches": total, "fraction": done / total},
            "cancel_requested": False,
            "attempt": 1,
            "parts": None,
            "error": None,
            "worst_case": None,
            "unknown_newer_field": "is left out",
        }
    )


def test_the_callback_sees_each_change_once_and_the_end_is_told() -> None:
    seen: list[tuple[str, int]] = []
    follower = CheckFollower(lambda j: seen.append((j.status, j.progress.done_batches)))
    states = [job("queued", 0), job("running", 1), job("running", 1), job("running", 3)]
    assert [follower.see(state) for state in states] == [False] * 4
    assert follower.see(job("done", 4)) is True
    assert seen == [("queued", 0), ("running", 1), ("running", 3), ("done", 4)]
    assert follower.pending is None


def test_a_coroutine_callback_is_left_for_the_async_client_to_await() -> None:
    seen: list[str] = []

    async def on_progress(j: RobustnessJob) -> None:
        seen.append(j.status)

    follower = CheckFollower(on_progress)
    assert follower.see(job("running", 1)) is False
    assert follower.pending is not None and seen == []
    asyncio.run(follower.pending)
    assert seen == ["running"]
    assert not follower.see(job("running", 1)) and follower.pending is None


def test_final_states_are_every_state_but_queued_and_running() -> None:
    assert [job(s, 0).finished for s in ("queued", "running")] == [False, False]
    assert all(job(s, 0).finished for s in ("done", "failed", "cancelled", "interrupted"))
