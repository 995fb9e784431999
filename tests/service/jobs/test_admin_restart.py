"""Robustness-check jobs across real restarts of ``python -m service``.

A finished report survives a graceful restart (and its gauges come back); a job that
was running when the service was killed with SIGKILL is ``interrupted`` after the next
start, its orphaned job process exits instead of running on, and the job queued behind
it runs.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest

from service.jobs.manager import INTERRUPTED_BY_CRASH
from tests.service.helpers.admin import (
    AUTH,
    FAST,
    SMALL_BAR_ENV,
    TOKEN,
    finished,
    poll,
    process_gone,
    robustness_metrics,
    slow,
)
from tests.service.helpers.servers import STOPPED_BY_SIGTERM, Server, start_server, stop

pytestmark = pytest.mark.slow


def gauge_lines(http: httpx.Client) -> list[str]:
    text = robustness_metrics(http)
    return sorted(line for line in text.splitlines() if line.startswith("qusec_robust_accuracy"))


def job_process_pid(server: Server, job_id: str) -> int:
    for line in server.log_lines():
        found = re.fullmatch(rf"job {job_id} running in process (\d+)", line.get("message", ""))
        if found:
            return int(found.group(1))
    raise AssertionError("the service did not log its job process")


def test_reports_survive_restarts_and_a_killed_job_is_interrupted(checkpoints, tmp_path) -> None:
    environment = {
        "QUSEC_CHECKPOINTS": str(checkpoints["mnist-tq2"]),
        "QUSEC_ADMIN_TOKEN": TOKEN,
        "QUSEC_ROBUSTNESS_DB": str(tmp_path / "jobs.sqlite3"),
        **SMALL_BAR_ENV,  # FAST's report is the one the gauges show
    }
    first = start_server(tmp_path / "first.log", [], environment)
    with httpx.Client(base_url=first.url, timeout=30) as http:
        done_id = http.post("/robustness-check", headers=AUTH, json=FAST).json()["id"]
        done = poll(http, done_id, finished)
        assert done["status"] == "done"
        poll(http, done_id, lambda _: gauge_lines(http))
        gauges = gauge_lines(http)
    assert stop(first) in STOPPED_BY_SIGTERM

    second = start_server(tmp_path / "second.log", [], environment)
    with httpx.Client(base_url=second.url, timeout=30) as http:
        assert http.get(f"/robustness-check/{done_id}", headers=AUTH).json() == done
        assert gauge_lines(http) == gauges  # republished from the stored report
        running_id = http.post("/robustness-check", headers=AUTH, json=slow(100)).json()["id"]
        poll(http, running_id, lambda job: job["progress"]["done_batches"] >= 1)
        queued_id = http.post("/robustness-check", headers=AUTH, json=FAST).json()["id"]
    second.process.kill()
    second.process.wait(timeout=30)
    orphan = job_process_pid(second, running_id)
    deadline = time.monotonic() + 120
    while not process_gone(orphan):
        assert time.monotonic() < deadline, "the job process outlived its service"
        time.sleep(0.1)
    went_away = "the service process went away; the job process exits"
    assert any(line.get("message") == went_away for line in second.log_lines())

    third = start_server(tmp_path / "third.log", [], environment)
    with httpx.Client(base_url=third.url, timeout=30) as http:
        interrupted = http.get(f"/robustness-check/{running_id}", headers=AUTH).json()
        assert interrupted["status"] == "interrupted"
        assert interrupted["error"] == INTERRUPTED_BY_CRASH
        assert interrupted["progress"]["done_batches"] >= 1 and interrupted["report"] is None
        assert http.get(f"/robustness-check/{done_id}", headers=AUTH).json() == done
        # The job that was waiting behind it runs now.
        assert poll(http, queued_id, finished)["status"] == "done"
        listed = http.get("/robustness-check", headers=AUTH).json()["jobs"]
        assert [job["id"] for job in listed] == [queued_id, running_id, done_id]
        metrics = robustness_metrics(http)
        assert 'qusec_robustness_jobs_total{status="interrupted"} 1.0' in metrics
    assert stop(third) in STOPPED_BY_SIGTERM
