"""The SQLite job store on its own: retention of finished jobs, the records it hands out."""

from __future__ import annotations

import sqlite3
from dataclasses import FrozenInstanceError

import pytest

from service.jobs.store import QUEUED, JobRecord
from service.jobs.store.sqlite import SqliteJobStore


def _run(store: SqliteJobStore, model: str, status: str, samples: bytes | None = None) -> str:
    submitted = store.submit(model, {"attacks": ["fgsm"]}, samples, capacity=10)
    job = store.claim_next()
    assert job.id == submitted.id
    report = {"worst_case": []} if status == "done" else None
    assert store.finish(job.id, job.lease, status, report=report)
    return job.id


def test_prune_keeps_the_newest_finished_and_each_models_latest_report(tmp_path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    store.initialise()
    old_a = _run(store, "a", "done", samples=b"npz bytes")
    old_b = _run(store, "b", "done")
    _run(store, "a", "failed", samples=b"npz bytes")
    newer = [_run(store, "a", status) for status in ("cancelled", "done", "timed_out")]
    queued = store.submit("a", {}, None, capacity=10).id

    assert store.prune(keep=2) == 3
    remaining = {job.id for job in store.recent(limit=100)}
    # The newest two finished, b's only report (gauges read it), and the queued job.
    assert remaining == {newer[1], newer[2], old_b, queued}
    assert old_a not in remaining
    assert store.latest_done()["a"].id == newer[1]
    with sqlite3.connect(store.path) as db:  # uploaded samples go with their job
        assert db.execute("SELECT COUNT(*) FROM job_samples").fetchone() == (0,)
    assert store.prune(keep=2) == 0


def test_a_job_comes_back_as_a_frozen_record(tmp_path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    store.initialise()
    submitted = store.submit("a", {"n": 1}, None, capacity=10)
    assert isinstance(submitted, JobRecord)
    assert (submitted.status, submitted.spec, submitted.attempt) == (QUEUED, {"n": 1}, 0)
    with pytest.raises(FrozenInstanceError):
        submitted.status = "done"  # type: ignore[misc]
