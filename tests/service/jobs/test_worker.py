"""The standalone worker's loop, in process, on a SQLite store: it runs what is queued,
hands a job back to the queue when it is told to stop or its store fails, and assembles a
split check."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from models.checkpoint import load_checkpoint
from models.evalset import eval_set_path
from robustness.request import SuiteRequest
from service.jobs import split
from service.jobs.planning import JobSpec
from service.jobs.store import QUEUED
from service.jobs.store.leases import LOST_TWICE
from service.jobs.store.sqlite import SqliteJobStore
from service.jobs.worker import WorkerConfig, work


def job_spec(checkpoint, **request) -> JobSpec:
    manifest = load_checkpoint(checkpoint).manifest
    suite = SuiteRequest(
        **{
            "attacks": ("fgsm", "pgd"),
            "threat_models": ("naive", "bpda"),
            "epsilons": (0.1, 0.3),
            "samples": 10,
            "batch_size": 5,
            "attack_params": {"pgd": {"nb_iter": 5}},
            "sanity_epsilon": None,
            **request,
        }
    )
    return JobSpec(
        model="mnist-tq2",
        checkpoint=str(checkpoint),
        weights_sha256=manifest.weights_sha256,
        input_shape=(1, 28, 28),
        classes=10,
        surrogate=None,
        eval_set=str(eval_set_path("mnist")),
        request=suite.as_dict(),
        time_budget_seconds=600,
    )


@pytest.fixture
def store(tmp_path) -> SqliteJobStore:
    engine = SqliteJobStore(tmp_path / "jobs.sqlite3")
    engine.initialise()
    return engine


@pytest.fixture
def config(store) -> WorkerConfig:
    return WorkerConfig(
        jobs_url=None,
        db_path=str(store.path),
        threads=1,
        nice=0,
        max_memory_bytes=4 << 30,
        log_level="info",
        log_format="json",
        max_upload_images=100,
        lease_seconds=30,
        stop_grace_seconds=30,
    )


def test_the_loop_runs_a_split_check_into_the_report_of_the_whole(
    store, config, checkpoints
) -> None:
    spec = job_spec(checkpoints["mnist-tq2"])
    model = load_checkpoint(checkpoints["mnist-tq2"]).model
    parts = split.plan_parts(spec, "mnist", model)
    assert parts is not None and len(parts) == 8
    whole = store.submit("mnist-tq2", spec.as_dict(), None, capacity=5)
    parent = store.submit(
        "mnist-tq2", spec.as_dict(), None, capacity=5, parts=[p.as_dict() for p in parts]
    )
    assert work(config, store, threading.Event(), max_jobs=9) == 9
    whole, parent = store.get(whole.id), store.get(parent.id)
    assert whole.status == parent.status == "done"
    assert parent.report["parts"] == 8
    assert _rows(parent.report) == _rows(whole.report)
    assert parent.headline == whole.headline == whole.report["worst_case"]
    assert parent.progress["done_batches"] == parent.progress["total_batches"] == 16


def test_a_stopping_worker_puts_its_job_back_where_it_was(store, config, checkpoints) -> None:
    spec = job_spec(
        checkpoints["mnist-tq2"],
        attacks=("pgd",),
        threat_models=("naive",),
        epsilons=(0.3,),
        samples=200,
        attack_params={"pgd": {"nb_iter": 200}},
    )
    job = store.submit("mnist-tq2", spec.as_dict(), None, capacity=5)
    behind = store.submit("mnist-tq2", spec.as_dict(), None, capacity=5)
    shutdown = threading.Event()
    loop = threading.Thread(target=work, args=(config, store, shutdown))
    loop.start()
    deadline = time.monotonic() + 120
    while not (store.get(job.id).progress or {}).get("done_batches"):
        assert time.monotonic() < deadline and loop.is_alive(), store.get(job.id)
        time.sleep(0.05)
    shutdown.set()
    loop.join(timeout=300)
    assert not loop.is_alive()
    back = store.get(job.id)
    assert back.status == QUEUED and back.attempt == 0 and back.progress is None
    assert store.claim_next("next").id == job.id  # ahead of the one behind it
    assert store.get(behind.id).status == QUEUED


class RefusingStore(SqliteJobStore):
    """Refuses the first ``refusals`` progress writes, as a database gone for a moment."""

    refusals = 0

    def update_progress(self, job_id: str, lease: str, progress: dict) -> bool:
        if self.refusals:
            self.refusals -= 1
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return super().update_progress(job_id, lease, progress)


@pytest.mark.parametrize(("refusals", "status"), [(1, "done"), (2, "interrupted")])
def test_a_run_whose_store_write_fails_is_handed_back_and_run_again_once(
    tmp_path, config, checkpoints, refusals, status
) -> None:
    store = RefusingStore(tmp_path / "refusing.sqlite3")
    store.initialise()
    spec = job_spec(
        checkpoints["mnist-tq2"],
        attacks=("fgsm",),
        threat_models=("naive",),
        epsilons=(0.3,),
        attack_params={},
    )
    job = store.submit("mnist-tq2", spec.as_dict(), None, capacity=5)
    store.refusals = refusals
    shutdown = threading.Event()
    give_up = threading.Timer(300, shutdown.set)  # a loop left idle fails, never hangs
    give_up.start()
    try:
        assert work(config, store, shutdown, max_jobs=2) == 2
    finally:
        give_up.cancel()
    ended = store.get(job.id)
    assert (ended.status, ended.attempt) == (status, 2)
    if status == "interrupted":
        assert ended.error.startswith(LOST_TWICE) and "writing progress" in ended.error
    else:
        assert ended.report["status"] == "complete"


def _rows(report: dict) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in report["results"]]
