"""Both job store engines, one contract: migrations, claims, leases, fencing, cancel, parts.

Every test runs on SQLite and on a real PostgreSQL server (a throwaway cluster; see
``tests/service/helpers/postgres.py``).
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from service.jobs.store import QUEUED, RUNNING, JobStore
from service.jobs.store.interface import LEASE_LOST_TWICE
from service.jobs.store.leases import LOST_TWICE
from service.jobs.store.postgres import MIGRATIONS as POSTGRES_MIGRATIONS
from service.jobs.store.postgres import PostgresJobStore
from service.jobs.store.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from service.jobs.store.sqlite import SqliteJobStore

SHORT_LEASE = 0.3


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> JobStore:
    if request.param == "sqlite":
        engine: JobStore = SqliteJobStore(tmp_path / "jobs.sqlite3")
    else:
        engine = PostgresJobStore(request.getfixturevalue("postgres_url"))
    engine.initialise()
    return engine


def wait_expired(store: JobStore, timeout: float = 30) -> list[tuple[str, str]]:
    deadline = time.monotonic() + timeout
    while not (handled := store.expire_leases()):
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.05)
    return handled


def versions(store: JobStore) -> list[int]:
    with store._connect() as db:
        rows = db.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    return [row["version"] for row in rows]


def test_migrations_are_versioned_and_applied_once(store) -> None:
    expected = SQLITE_MIGRATIONS if isinstance(store, SqliteJobStore) else POSTGRES_MIGRATIONS
    job = store.submit("m", {"n": 1}, None, capacity=5)
    store.initialise()  # a second replica starting: nothing to do, nothing lost
    assert versions(store) == list(range(1, len(expected) + 1))
    assert store.get(job.id).spec == {"n": 1}


def test_a_sqlite_database_from_before_versioning_is_upgraded(tmp_path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        for statement in SQLITE_MIGRATIONS[0]:
            db.execute(statement)
        db.execute(
            "INSERT INTO jobs (id, status, model, spec, created_at, report, headline) "
            "VALUES ('old', 'done', 'm', '{}', 1.0, '{\"worst_case\": []}', '[]')"
        )
    store = SqliteJobStore(path)
    store.initialise()
    old = store.get("old")
    assert old.status == "done" and old.attempt == 0 and old.report == {"worst_case": []}
    assert versions(store) == [1, 2, 3]
    # A check from before the bar never qualifies: the gauges wait for one that does.
    assert old.qualifying is None and store.latest_qualifying_ids() == {}


def test_concurrent_claimants_never_get_the_same_job(store) -> None:
    submitted = {store.submit("m", {"n": n}, None, capacity=100).id for n in range(24)}
    claimed: list[str] = []

    def claim_all(holder: str) -> None:
        while (job := store.claim_next(holder)) is not None:
            claimed.append(job.id)

    threads = [threading.Thread(target=claim_all, args=(f"h{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(submitted)
    assert store.count_active() == {QUEUED: 0, RUNNING: 24}


def test_an_expired_lease_is_requeued_once_then_interrupted_and_late_writes_are_fenced(
    store,
) -> None:
    first = store.submit("m", {}, None, capacity=5)
    behind = store.submit("m", {}, None, capacity=5)
    claim = store.claim_next("worker-a", SHORT_LEASE)
    assert claim.id == first.id and claim.attempt == 1
    assert wait_expired(store) == [(first.id, QUEUED)]
    # It kept its place: the next claim takes it again, before the job behind it.
    again = store.claim_next("worker-b", SHORT_LEASE)
    assert again.id == first.id and again.attempt == 2 and again.holder == "worker-b"
    # The first holder, back from the dead, can no longer write anything.
    assert not store.update_progress(first.id, claim.lease, {"done_batches": 9})
    assert not store.renew(first.id, claim.lease, 60)
    assert not store.finish(first.id, claim.lease, "done", report={"worst_case": []})
    assert wait_expired(store) == [(first.id, "interrupted")]
    lost = store.get(first.id)
    assert lost.status == "interrupted" and lost.error == LEASE_LOST_TWICE
    assert not store.finish(first.id, again.lease, "done", report={"worst_case": []})
    assert store.get(behind.id).status == QUEUED


def test_a_renewed_lease_does_not_expire_and_a_finished_report_stays(store) -> None:
    job = store.submit("m", {}, None, capacity=5)
    claim = store.claim_next("w", SHORT_LEASE)
    for _ in range(4):
        assert store.renew(job.id, claim.lease, 30)
        time.sleep(SHORT_LEASE / 2)
    assert store.expire_leases() == []
    assert store.finish(job.id, claim.lease, "done", report={"worst_case": [1]})
    assert not store.finish(job.id, claim.lease, "failed", error="late")
    assert store.expire_leases() == []
    done = store.get(job.id)
    assert done.status == "done" and done.report == {"worst_case": [1]}
    assert done.error is None


def test_cancel_is_a_flag_the_holder_reads_and_an_expired_cancelled_job_is_cancelled(
    store,
) -> None:
    job = store.submit("m", {}, None, capacity=5)
    claim = store.claim_next("w", SHORT_LEASE)
    assert store.request_stop(job.id, "cancel") == RUNNING
    assert store.request_stop(job.id, "shutdown") == RUNNING
    assert store.stop_request(job.id) == "cancel"  # never downgraded
    assert wait_expired(store) == [(job.id, "cancelled")]
    assert store.get(job.id).status == "cancelled"
    assert not store.finish(job.id, claim.lease, "done", report={"worst_case": []})


def test_a_split_check_is_claimed_by_parts_and_settled_once(store) -> None:
    parts = [{"units": [index]} for index in range(3)]
    parent = store.submit("m", {"units": None}, b"npz", capacity=1, parts=parts)
    assert parent.parts == 3
    claims = [store.claim_next(f"w{i}") for i in range(2)]
    assert [c.part for c in claims] == [0, 1]
    assert {c.parent_id for c in claims} == {parent.id}
    assert store.get(parent.id).status == RUNNING
    # Listing and the queue's capacity see the check, not its parts.
    assert [job.id for job in store.recent(10)] == [parent.id]
    assert store.count_active() == {QUEUED: 0, RUNNING: 1}
    store.update_progress(claims[0].id, claims[0].lease, _progress(2, 4))
    store.update_progress(claims[1].id, claims[1].lease, _progress(1, 4))
    assert store.get(parent.id).progress["done_batches"] == 3
    assert store.request_stop(parent.id, "cancel") == RUNNING
    statuses = [part.status for part in store.parts(parent.id)]
    assert statuses == [RUNNING, RUNNING, "cancelled"]

    def assemble(finished: list[dict]) -> tuple:
        return "cancelled", {"worst_case": [p.part for p in finished]}, "assembled"

    assert store.settle_split(parent.id, assemble) is None  # parts still running
    for claim in claims:
        store.finish(claim.id, claim.lease, "cancelled")
    assert store.settle_split(parent.id, assemble) == "cancelled"
    assert store.settle_split(parent.id, assemble) is None  # once only
    settled = store.get(parent.id)
    assert settled.report == {"worst_case": [0, 1, 2]} and settled.error == "assembled"


def _progress(done: int, total: int) -> dict:
    return {
        "done_batches": done,
        "total_batches": total,
        "attack": "fgsm",
        "threat_model": "naive",
        "epsilon": 0.1,
    }


def test_a_run_handed_back_is_queued_once_then_interrupted_saying_why(store) -> None:
    job = store.submit("m", {}, None, capacity=5)
    first = store.claim_next("w", 60)
    assert store.abandon(job.id, "not-its-lease", "why") is None  # fenced like every write
    assert store.abandon(job.id, first.lease, "the job store failed") == QUEUED
    again = store.claim_next("w", 60)
    assert again.id == job.id and again.attempt == 2
    assert store.abandon(job.id, again.lease, "the job store failed") == "interrupted"
    lost = store.get(job.id)
    assert lost.status == "interrupted"
    assert lost.error == f"{LOST_TWICE}: the job store failed"
    assert store.abandon(job.id, again.lease, "late") is None


def test_a_run_handed_back_after_a_cancel_is_cancelled(store) -> None:
    job = store.submit("m", {}, None, capacity=5)
    claim = store.claim_next("w", 60)
    store.request_stop(job.id, "cancel")
    assert store.abandon(job.id, claim.lease, "its job process died") == "cancelled"
    assert store.get(job.id).error == "cancelled; its job process died"


def _judged(qualifying: bool) -> dict:
    reasons = [] if qualifying else ["threat models that apply to the model are missing: naive"]
    return {"worst_case": [], "qualification": {"qualifying": qualifying, "reasons": reasons}}


def test_only_a_qualifying_check_is_the_one_the_gauges_show_and_pruning_keeps_it(store) -> None:
    finished = []
    for report in (_judged(True), _judged(False), {"worst_case": []}):
        store.submit("m", {"n": 1}, None, capacity=10)
        job = store.claim_next("h")
        assert store.finish(job.id, job.lease, "done", report=report)
        finished.append(job.id)
    qualifying, below_bar, unjudged = finished
    assert store.latest_qualifying_ids() == {"m": qualifying}
    assert store.get(qualifying).qualifying is True
    shown = store.get(below_bar, with_report=False)
    assert shown.qualifying is False and shown.qualification["reasons"][0].endswith("naive")
    assert store.get(unjudged).qualifying is False and store.get(unjudged).qualification is None
    # The newest finished job and the one the gauges show stay; the one between goes.
    assert store.prune(keep=1) == 1
    assert store.get(below_bar) is None
    assert store.latest_qualifying_ids() == {"m": qualifying}


def test_a_split_check_is_judged_when_it_is_settled(store) -> None:
    parent = store.submit("m", {"n": 1}, None, capacity=10, parts=[{"p": 0}, {"p": 1}])
    for _ in range(2):
        part = store.claim_next("h")
        assert store.finish(part.id, part.lease, "done", report={"worst_case": []})
    assert store.latest_qualifying_ids() == {}  # parts are never the check

    def assemble(parts: list) -> tuple:
        return "done", _judged(True), None

    assert store.settle_split(parent.id, assemble) == "done"
    assert store.latest_qualifying_ids() == {"m": parent.id}
