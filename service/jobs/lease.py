"""Keeping a running job's lease, from a thread beside the suite, and giving up the run
when the job store fails.

A batch of an expensive attack can take minutes, so the lease is not renewed from the
progress callback but from its own thread, every third of the lease. When a renewal
finds the job no longer ours (the lease expired and someone re-queued or interrupted
it, or it was finished elsewhere) the keeper says so, the suite stops at its next batch
and its result is dropped: every write is fenced by the lease token anyway, so nothing
the late holder could write would land.

A store call of the run that fails (the database is down, or refuses writes) ends the
run the same way (``StoreFault``): the lease is no longer renewed, the suite stops at its
next batch, and the run is handed back (``JobStore.abandon``: queued again once, then
interrupted) as soon as the store answers, or by the lease's expiry, whichever comes first.
A run that kept going without its store could not report, and its lease would be kept
alive by a holder that can no longer finish the job.

A standalone worker has no supervisor to kill a job that overruns its budget (or a
cancel) by more than the grace period, so there the keeper does it: it finishes the
job without a report and ends the process, whose orchestrator starts a fresh one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.jobs.store import JobStore

log = logging.getLogger(__name__)

# Why a run was given up, in the job's error when it is interrupted for it.
STORE_FAILED = "the job store failed while the job ran"


class StoreFault:
    """The first failed store call of one run; once recorded, the run ends."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.happened = threading.Event()
        self.detail: str | None = None
        self._lock = threading.Lock()  # the suite's and the keeper's threads both record

    def record(self, doing: str, exc: BaseException) -> None:
        with self._lock:
            if self.happened.is_set():
                return
            self.detail = f"{doing}: {first_line(exc)}"
            self.happened.set()
        log.warning("job %s: %s (%s); the run ends", self.job_id, STORE_FAILED, self.detail)

    def why(self) -> str:
        return f"{STORE_FAILED} ({self.detail})"


def first_line(exc: BaseException) -> str:
    """An exception in one short line (database errors run over several)."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


@dataclass(frozen=True)
class Deadline:
    """When an overrunning job is killed, and what it is then marked (by the service's
    scheduler for a job process it watches, or by a standalone worker's lease keeper)."""

    at: float
    status: str
    error: str


class LeaseKeeper:
    def __init__(
        self,
        store: JobStore,
        job_id: str,
        lease: str,
        lease_seconds: float,
        fault: StoreFault,
        deadline: Callable[[], Deadline] | None = None,
    ) -> None:
        self.store, self.job_id, self.lease = store, job_id, lease
        self.lease_seconds, self.fault, self.deadline = lease_seconds, fault, deadline
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="lease-keeper", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def _keep(self) -> None:
        interval = min(self.lease_seconds / 3, 1.0 if self.deadline else self.lease_seconds)
        renewed = time.monotonic()
        while not self._done.wait(interval):
            if self.deadline is not None:
                self._enforce(self.deadline())
            # A run whose store failed renews nothing: its lease is handed back, or lapses.
            if self.fault.happened.is_set() or time.monotonic() - renewed < self.lease_seconds / 3:
                continue
            try:
                ours = self.store.renew(self.job_id, self.lease, self.lease_seconds)
            except self.store.errors as exc:
                self.fault.record("renewing the lease", exc)
                continue
            renewed = time.monotonic()
            if not ours:
                log.warning("job %s: lease lost; this run's result will be dropped", self.job_id)
                self.lost.set()
                return

    def _enforce(self, deadline: Deadline) -> None:
        if time.time() <= deadline.at:
            return
        log.warning("job %s: killing the worker (%s)", self.job_id, deadline.status)
        try:
            self.store.finish(self.job_id, self.lease, deadline.status, error=deadline.error)
        finally:
            os._exit(3)
