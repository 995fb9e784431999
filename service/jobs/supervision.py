"""One job process, watched by the replica that claimed its job.

The scheduler thread (``manager``) starts ``python -m service.jobs.worker`` for each job it
claims and watches it here until it exits. It is killed past its deadline (its budget
plus the grace period, or sooner once a cancel or a shutdown has given it the grace
period), or as soon as its run is lost. The lease is renewed from here, every third of a
lease, for as long as the process lives and no longer: a process that has exited, or a
run whose store failed, keeps no lease alive. The watch ends with an ``Ending`` that says
how the job is to be settled.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from service.jobs.lease import STORE_FAILED, Deadline, first_line
from service.jobs.spec import STORE_FAULT_EXIT_STATUS, JobSpec, WorkerConfig
from service.jobs.store import JobRecord, JobStore
from service.placement import UNPINNED_CPUS_ENV
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

WATCH_SECONDS = 0.2
# Where ``service`` can be imported from, whatever the service's working directory.
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
OVERRAN = "the job overran its time budget and was stopped without a report"
# The ending of a run lost through no fault of the job's: it is handed back to the queue.
ABANDON = "abandon"


@dataclass(frozen=True)
class Ending:
    """How to settle a job once its process is gone: finish it with ``status`` (a no-op
    if the process finished it), hand the run back (``ABANDON``; ``error`` says why), or
    leave it (``""``: the job is no longer this run's)."""

    status: str
    error: str | None = None


class JobProcess:
    def __init__(self, job: JobRecord, store: JobStore, settings: ServiceSettings) -> None:
        self.job, self.store, self.settings = job, store, settings
        spec = JobSpec.from_dict(job.spec)
        started = job.started_at or time.time()  # a claimed job has its start
        budget = spec.time_budget_seconds + settings.robustness_stop_grace_seconds
        self._deadline = Deadline(started + budget, "timed_out", OVERRAN)
        self._lock = threading.Lock()  # a cancel (request thread) or shutdown moves it

    def stop_by(self, at: float, status: str, error: str) -> None:
        """Kill the process at ``at`` (unless it stops first, or an earlier deadline
        holds), and mark the job ``status`` then."""
        with self._lock:
            if at < self._deadline.at:
                self._deadline = Deadline(at, status, error)

    def run(self) -> Ending:
        """Start the job process and watch it until it exits."""
        process = self._spawn()
        try:
            ending = self._watch(process)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            process.stdin.close()  # type: ignore[union-attr]
        return ending or self._exit_ending(process.returncode)

    def _watch(self, process: subprocess.Popen) -> Ending | None:
        """Until the process exits; an ending when it had to be killed."""
        renew_every = self.settings.robustness_lease_seconds / 3
        renewed, renewing = time.monotonic(), True
        while process.poll() is None:
            time.sleep(WATCH_SECONDS)
            deadline = self._deadline
            if time.time() > deadline.at:
                log.warning("job %s: killing its process (%s)", self.job.id, deadline.status)
                process.kill()
                return Ending(deadline.status, deadline.error)
            # The job process renews the lease too, once it has started; this covers its
            # start-up (importing torch can take long on a loaded host).
            if renewing and time.monotonic() - renewed > renew_every:
                renewed = time.monotonic()
                ending, renewing = self._renew()
                if ending is not None:
                    process.kill()
                    return ending
        return None

    def _renew(self) -> tuple[Ending | None, bool]:
        """Renew the lease: (an ending if the run is lost, whether to keep renewing)."""
        job, lease = self.job, self.job.lease or ""
        try:
            if self.store.renew(job.id, lease, self.settings.robustness_lease_seconds):
                return None, True
            now = self.store.get(job.id, with_report=False)
        except self.store.errors as exc:
            why = f"{STORE_FAILED} (renewing its lease: {first_line(exc)})"
            log.warning("job %s: %s; killing its process", job.id, why)
            return Ending(ABANDON, why), False
        if now is not None and now.finished and now.lease == job.lease:
            return None, False  # its process finished the job and is exiting
        log.warning("job %s: lease lost; killing its process", job.id)
        return Ending(""), False

    def _exit_ending(self, code: int) -> Ending:
        if code == STORE_FAULT_EXIT_STATUS:
            return Ending(ABANDON, f"{STORE_FAILED} (its job process could not use the store)")
        if code < 0:  # killed by a signal this process did not send (the OOM killer, say)
            return Ending(ABANDON, f"its job process died ({_signal_name(-code)})")
        return Ending("failed", f"the job process exited with status {code}")

    def _spawn(self) -> subprocess.Popen:
        job = self.job
        config = WorkerConfig.from_settings(self.settings, job_id=job.id, lease=job.lease or "")
        # stdin carries the configuration, then stays open: the job process exits when
        # it closes, which is also what happens when this process dies.
        process = subprocess.Popen(
            [sys.executable, "-m", "service.jobs.worker"],
            stdin=subprocess.PIPE,
            cwd=_SOURCE_ROOT,
            env=self._environment(),
        )
        process.stdin.write(config.to_line())  # type: ignore[union-attr]
        process.stdin.flush()  # type: ignore[union-attr]
        log.info("job %s running in process %d", job.id, process.pid)
        return process

    def _environment(self) -> dict[str, str]:
        # Settings reach the job process in its configuration line, not the environment,
        # so the admin token stays behind; OpenMP's pool is capped before torch starts.
        threads = str(self.settings.robustness_threads)
        environment = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("QUSEC_") or k == UNPINNED_CPUS_ENV
        }
        return {**environment, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
