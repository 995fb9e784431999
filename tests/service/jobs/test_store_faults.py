"""Database faults end, they never wedge: two replicas on one PostgreSQL, real processes.

Both replicas (``python -m service``) run jobs, with a short lease, on a PostgreSQL server
of this module's own, which the tests stop and start again (``EmbeddedPostgres``) or make
refuse writes (``default_transaction_read_only`` on the database: every new session is
read-only, reads still work). A job whose run is cut off by the fault is handed back once
the store answers (queued again once, its second loss interrupts it, saying why), a
``DELETE`` either takes effect or answers 503 saying why, and both replicas claim new
jobs afterwards, on their own.

No timing is asserted: the tests wait for states, with generous limits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from service.jobs.store.leases import LOST_TWICE
from service.jobs.store.postgres import PostgresJobStore
from tests.service.helpers.admin import AUTH, TOKEN, finished, poll, slow
from tests.service.helpers.postgres import EmbeddedPostgres, fresh_database, postgres_server
from tests.service.helpers.servers import PNG, STOPPED_BY_SIGTERM, Server, start_server, stop

pytestmark = pytest.mark.slow

LEASE_SECONDS = 3
# About ten seconds of PGD on one thread, past the job process's start-up.
STEADY = slow(samples=100)
# About a hundred seconds: it runs while a test does other things, then is cancelled.
ENDLESS = slow(samples=100, steps=1000)


@dataclass
class Pair:
    database: EmbeddedPostgres
    url: str
    a: Server
    b: Server

    def store(self) -> PostgresJobStore:
        return PostgresJobStore(self.url)

    def holder(self, job_id: str) -> Server:
        """The replica holding the job (the process named in its lease)."""
        holder = self.store().get(job_id).holder
        pid = int(holder.rsplit(":", 1)[1])
        return next(server for server in (self.a, self.b) if server.process.pid == pid)

    @contextmanager
    def read_only(self) -> Iterator[None]:
        """The database refuses writes in every new session (the store opens one per
        operation) until the block ends."""
        name = self.url.rsplit("/", 1)[1]
        with psycopg.connect(self.database.url, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
            try:
                yield
            finally:
                admin.execute(f"ALTER DATABASE {name} RESET default_transaction_read_only")


@pytest.fixture(scope="module")
def pair(checkpoints, tmp_path_factory) -> Iterator[Pair]:
    logs = tmp_path_factory.mktemp("faults")
    with postgres_server() as database:
        url = fresh_database(database.url)
        env = {
            "QUSEC_JOBS_URL": url,
            "QUSEC_ROBUSTNESS_LEASE_SECONDS": str(LEASE_SECONDS),
            "QUSEC_CHECKPOINTS": str(checkpoints["mnist-tq2"]),
            "QUSEC_ADMIN_TOKEN": TOKEN,
            "QUSEC_ROBUSTNESS_QUEUE_SIZE": "10",
        }
        a = start_server(logs / "a.log", [], env)
        b = start_server(logs / "b.log", [], env)
        try:
            yield Pair(database, url, a, b)
        finally:
            if not database.running():
                database.start()
            for server in (a, b):
                assert stop(server) in STOPPED_BY_SIGTERM, server.log.read_text()[-5000:]


@pytest.fixture
def clients(pair) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with (
        httpx.Client(base_url=pair.a.url, timeout=60) as a,
        httpx.Client(base_url=pair.b.url, timeout=60) as b,
    ):
        yield a, b


def submit(http: httpx.Client, request: dict) -> str:
    answer = http.post("/robustness-check", headers=AUTH, json=request)
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def crafting(attempt: int) -> Callable[[dict], bool]:
    """The job's run ``attempt`` is running and has finished a batch."""
    return lambda job: (
        job["status"] == "running"
        and job["attempt"] == attempt
        and job["progress"]["done_batches"] >= 1
    )


def job_processes(server: Server) -> list[int]:
    """The job processes the replica has running (its children running the worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if parent == server.process.pid and b"service.jobs.worker" in command:
            found.append(int(entry.name))
    return found


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def wait_for_its_job_process_to_end(server: Server) -> None:
    wait_until(lambda: not job_processes(server), "the job process outlived its store")


def cut_the_store_mid_job(pair, client: httpx.Client, job_id: str, attempt: int = 1) -> Server:
    """Once the job crafts (on its ``attempt``), stop the database and wait for the job's
    process to end; returns the replica that held it."""
    poll(client, job_id, crafting(attempt))
    holder = pair.holder(job_id)
    pair.database.stop()
    wait_for_its_job_process_to_end(holder)
    return holder


def refused_for_the_store(answer: httpx.Response) -> bool:
    return answer.status_code == 503 and answer.json()["reason"] == "jobs_unavailable"


def test_an_outage_longer_than_the_lease_ends_in_a_rerun(pair, clients) -> None:
    a, b = clients
    job_id = submit(a, STEADY)
    cut_the_store_mid_job(pair, a, job_id)
    # Classification never needs the store; the admin routes say why they cannot answer.
    assert a.post("/classify", content=PNG).status_code == 200
    assert refused_for_the_store(b.delete(f"/robustness-check/{job_id}", headers=AUTH))
    time.sleep(2 * LEASE_SECONDS)  # the outage outlasts the lease
    pair.database.start()
    job = poll(b, job_id, finished)
    assert job["status"] == "done" and job["attempt"] == 2, job
    assert job["report"]["status"] == "complete"


def test_after_an_outage_both_replicas_claim_new_jobs(pair, clients) -> None:
    a, b = clients
    pair.database.stop()
    time.sleep(2 * LEASE_SECONDS)  # every replica has failed to reach it by now
    pair.database.start()
    # While one replica is busy with a long job, only the other can run the next one.
    busy_id = submit(a, ENDLESS)
    poll(a, busy_id, crafting(1))
    busy = pair.holder(busy_id)
    next_id = submit(b, slow(samples=10))
    assert poll(b, next_id, finished)["status"] == "done"
    assert pair.holder(next_id) is not busy
    # A running job's cancel takes effect.
    cancelling = b.delete(f"/robustness-check/{busy_id}", headers=AUTH)
    assert cancelling.status_code in (200, 202) and cancelling.json()["cancel_requested"]
    assert poll(a, busy_id, finished)["status"] == "cancelled"
    assert pair.holder(busy_id) is busy


def test_a_second_lost_run_interrupts_the_job_saying_why(pair, clients) -> None:
    a, b = clients
    job_id = submit(a, STEADY)
    for attempt in (1, 2):
        cut_the_store_mid_job(pair, a, job_id, attempt)
        pair.database.start()
    job = poll(b, job_id, finished)
    assert job["status"] == "interrupted" and job["attempt"] == 2, job
    assert job["error"].startswith(LOST_TWICE) and "job store" in job["error"]


def test_a_cancel_after_an_outage_takes_effect(pair, clients) -> None:
    a, b = clients
    job_id = submit(a, ENDLESS)
    cut_the_store_mid_job(pair, a, job_id)
    pair.database.start()
    # The run is lost and nobody renews its lease: whatever state the job is in when the
    # cancel arrives (still running, or queued again), the cancel ends it.
    cancelling = b.delete(f"/robustness-check/{job_id}", headers=AUTH)
    assert cancelling.status_code in (200, 202), cancelling.text
    assert poll(b, job_id, finished)["status"] == "cancelled"


def test_a_store_that_refuses_writes_ends_the_run_until_it_accepts_them(pair, clients) -> None:
    a, b = clients
    job_id = submit(a, STEADY)
    poll(a, job_id, crafting(1))
    holder = pair.holder(job_id)
    with pair.read_only():
        # Reads still work; every write is refused, and the answers say so.
        assert a.get(f"/robustness-check/{job_id}", headers=AUTH).status_code == 200
        refused = b.delete(f"/robustness-check/{job_id}", headers=AUTH)
        assert refused_for_the_store(refused) and "read-only" in refused.json()["error"]
        assert refused_for_the_store(b.post("/robustness-check", headers=AUTH, json=STEADY))
        wait_for_its_job_process_to_end(holder)
    job = poll(b, job_id, finished)
    assert job["status"] == "done" and job["attempt"] == 2, job


def test_a_replica_started_during_an_outage_opens_its_store_once_it_is_back(
    pair, serve, checkpoints
) -> None:
    pair.database.stop()
    try:
        replica = serve(
            checkpoints=[checkpoints["mnist-tq2"]],
            admin_token=TOKEN,
            jobs_url=pair.url,
            robustness_run_jobs=False,  # a serving-only replica: it claims nothing here
        )
        assert replica.post("/classify", content=PNG).status_code == 200
        assert refused_for_the_store(replica.get("/robustness-check", headers=AUTH))
    finally:
        pair.database.start()
    wait_until(
        lambda: replica.get("/robustness-check", headers=AUTH).status_code == 200,
        "the replica never opened its store",
    )
