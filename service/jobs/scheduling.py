"""The one scheduling loop: settle expired leases, claim the oldest queued job, run it.

A service replica runs it on a thread beside its event loop, running each job in a job
process it watches (``service.jobs.manager``); a standalone worker runs it as its main
loop, running each job in-process (``service.jobs.worker``). Both see expired leases
(jobs whose holder died) the same way: logged, counted in ``robustness_jobs_total`` when
the loop has the service's metrics, and their split check settled when they were its
last part.

Nothing ends the loop but ``stop``: a store that cannot be used (down, refusing writes)
is tried again after a pause, for as long as it takes, and a job whose run raised is
logged, so one bad moment never leaves a replica that no longer claims jobs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

from service.jobs import split
from service.jobs.store import QUEUED, JobRecord, JobStore
from service.metrics import ServiceMetrics

log = logging.getLogger(__name__)


def holder_name() -> str:
    """Who holds a claimed job's lease: this host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


class JobLoop:
    def __init__(
        self,
        store: JobStore,
        lease_seconds: float,
        run: Callable[[JobRecord], None],
        *,
        idle_seconds: float = 1.0,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.store, self.lease_seconds, self.run_job = store, lease_seconds, run
        self.idle_seconds, self.metrics = idle_seconds, metrics
        self.holder = holder_name()
        # Set by whoever queued a job here, so the loop need not wait for its next look.
        self.wake = threading.Event()

    def run(self, stop: threading.Event, max_jobs: int | None = None) -> int:
        """Claim and run jobs until ``stop`` is set (or ``max_jobs`` ran); returns how many ran."""
        ran, failing = 0, False
        while not stop.is_set() and (max_jobs is None or ran < max_jobs):
            self.wake.clear()
            try:
                self.settle_expired()
                job = self.store.claim_next(self.holder, self.lease_seconds)
            except Exception as exc:  # the store is down or refuses writes: try again
                if not failing:
                    log.error("the job store failed; trying again until it answers: %s", exc)
                failing = True
                stop.wait(self.idle_seconds * 5)
                continue
            if failing:
                log.warning("the job store answers again; claiming jobs")
            failing = False
            if job is None:
                # A submit here wakes the loop at once; a job submitted to another process
                # sharing the store is seen at the next look.
                self._idle(stop)
                continue
            if stop.is_set():  # claimed while stopping: it runs after the restart
                self._release(job)
                break
            log.info("job %s claimed by %s (attempt %d)", job.id, self.holder, job.attempt)
            try:
                self.run_job(job)
            except Exception as exc:  # a loop that dies strands every later job
                log.error("job %s: running it failed", job.id, exc_info=exc)
            ran += 1
        return ran

    def _release(self, job: JobRecord) -> None:
        try:
            self.store.release(job.id, job.lease)  # type: ignore[arg-type]
        except Exception as exc:  # its lease, no longer renewed, puts it back instead
            log.warning("job %s: could not put it back in the queue: %s", job.id, exc)

    def settle_expired(self) -> None:
        """Queue again or interrupt the jobs whose holder's lease expired, anywhere."""
        for job_id, status in self.store.expire_leases():
            log.warning("job %s: its holder's lease expired; now %s", job_id, status)
            if status != QUEUED and self.metrics is not None:
                self.metrics.robustness_jobs.labels(status=status).inc()
            split.settle_parent_of(self.store, job_id)

    def _idle(self, stop: threading.Event) -> None:
        # Whichever comes first: a wake, a stop, or the next look.
        waited = 0.0
        step = min(0.05, self.idle_seconds)
        while waited < self.idle_seconds and not (stop.is_set() or self.wake.is_set()):
            self.wake.wait(step)
            waited += step
