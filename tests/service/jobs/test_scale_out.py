"""Many replicas and workers on one PostgreSQL job store, as real processes.

Two service replicas (``python -m service``, running no jobs themselves; A splits checks
into their units, B does not) and two standalone workers (``python -m service.jobs.worker
--loop``) share a throwaway PostgreSQL cluster. A check submitted to A is read and
cancelled through B; the cancel reaches whichever worker runs it. A worker killed with
SIGKILL mid-job loses its lease, the job is queued again (once) and the other worker
runs it to the end. Two workers split one check, and its assembled report equals the
report of the same check run whole by one worker, row for row (timings aside).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.jobs.store.postgres import PostgresJobStore
from tests.service.helpers.admin import AUTH, TOKEN, finished, metric_value, poll, slow
from tests.service.helpers.postgres import fresh_database
from tests.service.helpers.servers import ROOT, STOPPED_BY_SIGTERM, Server, start_server, stop

pytestmark = pytest.mark.slow

LEASE_SECONDS = "3"
# Fourteen units (FGSM and PGD under three threat models, the noise floor under the
# fourth, at two radii); PGD's draws its random start, so equal rows show the per-unit
# seeding at work across processes. Every threat model that applies runs, so under the
# replicas' bar (BAR) the check qualifies and sets the gauges.
SPLITTABLE = {
    "attacks": ["noise", "fgsm", "pgd"],
    "threat_models": ["transfer", "naive", "bpda", "gradient_free"],
    "epsilons": [0.1, 0.3],
    "attack_params": {"pgd": {"nb_iter": 40}},
    "samples": 20,
    "batch_size": 10,
    "sanity_epsilon": None,
}
BAR = {
    "QUSEC_ROBUSTNESS_QUALIFYING_ATTACKS": "pgd",
    "QUSEC_ROBUSTNESS_QUALIFYING_EPSILONS": "0.1,0.3",
    "QUSEC_ROBUSTNESS_QUALIFYING_SAMPLES": "20",
}


@dataclass
class Worker:
    process: subprocess.Popen
    log: Path

    def log_lines(self) -> list[dict]:
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def said(self, prefix: str) -> bool:
        return any(line["message"].startswith(prefix) for line in self.log_lines())


def start_worker(log: Path, env: dict[str, str]) -> Worker:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("QUSEC_")},
        "QUSEC_LOG_FORMAT": "json",
        **env,
    }
    command = [sys.executable, "-m", "service.jobs.worker", "--loop"]
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=sink, stderr=sink)
    worker = Worker(process, log)
    deadline = time.monotonic() + 120
    while not worker.said("worker started"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"worker did not start:\n{log.read_text()}")
        time.sleep(0.1)
    return worker


@dataclass
class Fleet:
    a: Server
    b: Server
    workers: list[Worker]
    store: PostgresJobStore


@pytest.fixture(scope="module")
def fleet(checkpoints, postgres, tmp_path_factory) -> Iterator[Fleet]:
    url = fresh_database(postgres.url)
    logs = tmp_path_factory.mktemp("fleet")
    shared = {"QUSEC_JOBS_URL": url, "QUSEC_ROBUSTNESS_LEASE_SECONDS": LEASE_SECONDS}
    replica = {
        **shared,
        "QUSEC_CHECKPOINTS": str(checkpoints["mnist-tq2"]),
        "QUSEC_ADMIN_TOKEN": TOKEN,
        "QUSEC_ROBUSTNESS_RUN_JOBS": "false",
        "QUSEC_ROBUSTNESS_QUEUE_SIZE": "10",
        **BAR,
    }
    a = start_server(logs / "a.log", [], {**replica, "QUSEC_ROBUSTNESS_SPLIT_UNITS": "true"})
    b = start_server(logs / "b.log", [], replica)
    workers = [start_worker(logs / f"worker{i}.log", shared) for i in range(2)]
    yield Fleet(a, b, workers, PostgresJobStore(url))
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.terminate()
            assert worker.process.wait(timeout=60) == 0, worker.log.read_text()
    for server in (a, b):
        assert stop(server) in STOPPED_BY_SIGTERM


def holder_pid(store: PostgresJobStore, job_id: str) -> int:
    return int(store.get(job_id).holder.rsplit(":", 1)[1])


def test_submit_on_one_replica_read_and_cancel_on_the_other(fleet) -> None:
    with (
        httpx.Client(base_url=fleet.a.url, timeout=30) as a,
        httpx.Client(base_url=fleet.b.url, timeout=30) as b,
    ):
        submitted = a.post("/robustness-check", headers=AUTH, json=slow(samples=100))
        assert submitted.status_code == 202
        job_id = submitted.json()["id"]
        running = poll(b, job_id, lambda job: job["progress"]["done_batches"] >= 2)
        assert running["status"] == "running" and running["attempt"] == 1
        assert job_id in [
            job["id"] for job in b.get("/robustness-check", headers=AUTH).json()["jobs"]
        ]
        pid = holder_pid(fleet.store, job_id)
        assert pid in [worker.process.pid for worker in fleet.workers]
        cancelling = b.delete(f"/robustness-check/{job_id}", headers=AUTH)
        assert cancelling.status_code in (200, 202) and cancelling.json()["cancel_requested"]
        job = poll(a, job_id, finished)
    assert job["status"] == "cancelled" and job["error"].startswith("cancelled on request")
    rows = job["report"]["results"]
    assert rows and sum(row["samples"] for row in rows) < 100


def test_two_workers_split_one_check_into_the_one_worker_report(fleet) -> None:
    with (
        httpx.Client(base_url=fleet.a.url, timeout=30) as a,
        httpx.Client(base_url=fleet.b.url, timeout=30) as b,
    ):
        split_id = a.post("/robustness-check", headers=AUTH, json=SPLITTABLE).json()["id"]
        split = poll(b, split_id, finished, timeout=300)
        whole_id = b.post("/robustness-check", headers=AUTH, json=SPLITTABLE).json()["id"]
        whole = poll(a, whole_id, finished, timeout=300)
    assert split["status"] == whole["status"] == "done"
    assert split["parts"] == 14 and whole["parts"] is None
    assert split["qualifying"] is whole["qualifying"] is True, split["qualification"]
    assert split["report"]["qualification"] == whole["report"]["qualification"]
    holders = {part.holder for part in fleet.store.parts(split_id)}
    assert len(holders) == 2, holders  # both workers took parts
    assert _rows(split["report"]) == _rows(whole["report"])
    assert len(_rows(whole["report"])) == 14
    for key in (
        "worst_case",
        "worst_case_per_attack",
        "masking_flags",
        "skipped",
        "clean_accuracy",
    ):
        assert split["report"][key] == whole["report"][key], key
    assert split["worst_case"] == whole["worst_case"]
    # Neither replica ran a job; both export the newest qualifying report's gauges from
    # the store.
    worst = next(w for w in whole["worst_case"] if w["epsilon"] == 0.3)["robust_accuracy"]
    for server in (fleet.a, fleet.b):
        assert robust_gauge(server, "worst", "worst", 0.3) == pytest.approx(worst)


def robust_gauge(server: Server, attack: str, threat_model: str, epsilon: float) -> float:
    """The exported robust accuracy, once the replica's upkeep has published it."""
    deadline = time.monotonic() + 60
    while True:
        text = httpx.get(f"{server.url}/admin/metrics", headers=AUTH, timeout=30).text
        try:
            return metric_value(
                text,
                "qusec_robust_accuracy_ratio",
                model="mnist-tq2",
                attack=attack,
                threat_model=threat_model,
                epsilon=f"{epsilon:g}",
            )
        except AssertionError:
            assert time.monotonic() < deadline, "the gauge never appeared"
            time.sleep(0.2)


def test_a_killed_worker_loses_its_lease_and_the_job_is_run_again(fleet) -> None:
    with httpx.Client(base_url=fleet.b.url, timeout=30) as b:
        job_id = b.post("/robustness-check", headers=AUTH, json=slow(samples=40)).json()["id"]
        poll(b, job_id, lambda job: job["progress"]["done_batches"] >= 1)
        pid = holder_pid(fleet.store, job_id)
        victim = next(w for w in fleet.workers if w.process.pid == pid)
        victim.process.kill()
        assert victim.process.wait(timeout=30) == -9
        job = poll(b, job_id, finished, timeout=300)
    assert job["status"] == "done" and job["attempt"] == 2, job
    assert job["report"]["status"] == "complete"
    assert [row["samples"] for row in job["report"]["results"]] == [40]
    survivor = next(w for w in fleet.workers if w is not victim)
    assert holder_pid(fleet.store, job_id) == survivor.process.pid


def _rows(report: dict) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in report["results"]]
