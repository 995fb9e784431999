"""Job workers: robustness checks, run off the request path.

Two ways in, one way to run a job (``run_job``):

- ``python -m service.jobs.worker`` (no arguments) is the job process a service replica
  starts for a job it claimed (a fresh interpreter, so it shares nothing with the serving
  process but the job store). It reads its configuration as one JSON line on stdin, and
  stdin stays open for as long as the service lives: at end-of-file it exits.
- ``python -m service.jobs.worker --loop`` (or ``qusec-worker``) is a standalone worker
  that serves no HTTP: its configuration comes from the ``QUSEC_*`` settings; it claims
  queued jobs one after another and runs each in its own process, handles expired leases
  it notices, and on SIGTERM stops the running job at its next batch, puts it back in the
  queue (keeping its place) and exits.

A job runs with its own torch thread count and niceness; progress goes to the job's row,
the row's stop request (cancel or shutdown) is polled through the suite's ``should_stop``
hook, a thread renews the lease (``lease.LeaseKeeper``), and the row is finished with
the report, partial or complete, under the lease. The last part of a split check to
finish assembles the check's report (``split``).

A store call that fails ends the run (``lease.StoreFault``): the suite stops at its next
batch and the run is handed back (``JobStore.abandon``). A job process leaves that to the
service that started it and exits with ``STORE_FAULT_EXIT_STATUS``; a standalone worker
hands it back itself if the store answers again, else leaves it to the lease's expiry,
and goes on with its loop, which waits for the store.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import sys
import threading
import time
from dataclasses import replace
from typing import TextIO

import torch
from pydantic import ValidationError

from models.checkpoint import CheckpointError, load_checkpoint
from models.evalset import EvalSet, EvalSetError, load_eval_set
from models.memory import keep_freed_memory
from robustness.request import SuiteRequest
from robustness.runner import Progress, Subject, budget, run_suite
from service.errors import ServiceError
from service.jobs import split
from service.jobs.lease import Deadline, LeaseKeeper, StoreFault
from service.jobs.qualifying import qualified
from service.jobs.samples import parse_samples
from service.jobs.scheduling import JobLoop
from service.jobs.spec import STORE_FAULT_EXIT_STATUS, JobSpec, WorkerConfig
from service.jobs.store import QUEUED, JobRecord, JobStore
from service.logs import configure_logging
from service.placement import unpin_child
from service.settings import ServiceSettings

log = logging.getLogger("service.jobs.worker")

# How often the job process looks at its row for a stop request, and writes progress.
POLL_SECONDS = 0.25
# How long an idle standalone worker waits before it looks at the queue again.
IDLE_SECONDS = 1.0
# Final status and note of a suite that stopped early, by the job's stop request.
STOPPED = {
    "cancel": ("cancelled", "cancelled on request; the report holds what was done"),
    "shutdown": ("interrupted", "the service shut down while the job ran"),
    None: ("timed_out", "the time budget ran out; the report holds what was done"),
}
OVERRAN = "the job overran its time budget and was stopped without a report"
# What ``run_job`` returns for a run given up because its store failed.
ABANDONED = "abandoned"


class JobError(Exception):
    """A job cannot run as specified; the message is shown to the operator."""


class StoreFailed(Exception):
    """A store call of the run failed (recorded in its ``StoreFault``): the run ends."""


def main(stdin: TextIO = sys.stdin) -> None:
    """The job process of a service replica: configuration from stdin's first line."""
    # Ctrl-C reaches the whole process group; the service decides what happens to the job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    unpin_child()
    keep_freed_memory()  # attacks allocate and free activations and gradients every step
    config = WorkerConfig(**json.loads(stdin.readline()))
    _exit_with_service(stdin)
    _configure_process(config)
    store = config.store()
    try:
        job = store.get(config.job_id, with_report=False)  # type: ignore[arg-type]
    except store.errors as exc:
        log.warning("job %s: the job store failed before the job started: %s", config.job_id, exc)
        sys.exit(STORE_FAULT_EXIT_STATUS)
    if job is None:
        log.error("job %s not found", config.job_id)
        return
    job = replace(job, lease=config.lease)
    if run_job(store, job, config, threading.Event(), supervised=True) == ABANDONED:
        sys.exit(STORE_FAULT_EXIT_STATUS)  # the service hands the run back


def work(
    config: WorkerConfig, store: JobStore, shutdown: threading.Event, max_jobs: int | None = None
) -> int:
    """The standalone worker: the one scheduling loop (``scheduling.JobLoop``), running each
    job in this process, until ``shutdown``; returns the number of jobs it ran."""

    def run(job: JobRecord) -> None:
        run_job(store, job, config, shutdown, supervised=False)

    loop = JobLoop(store, config.lease_seconds, run, idle_seconds=IDLE_SECONDS)
    return loop.run(shutdown, max_jobs)


def run_job(
    store: JobStore,
    job: JobRecord,
    config: WorkerConfig,
    shutdown: threading.Event,
    supervised: bool,
) -> str | None:
    """Run a claimed job and finish it under its lease; returns what became of it (None:
    the lease was lost and the result dropped; ``ABANDONED``: the store failed)."""
    started = time.monotonic()
    spec = JobSpec.from_dict(job.spec)
    context = {"job_id": job.id, "model": spec.model}
    log.info("job started", extra=context)
    fault = StoreFault(job.id)
    keeper = LeaseKeeper(store, job.id, job.lease, config.lease_seconds, fault)
    poller = StopPoller(store, job.id, keeper.lost, shutdown, fault)
    if not supervised:  # nobody else would kill it if it overran
        keeper.deadline = lambda: _deadline(job, spec, poller, config.stop_grace_seconds)
    with keeper:
        status, report, error = _execute(spec, store, job, config, started, poller, context)
    if keeper.lost.is_set():
        return None
    if not fault.happened.is_set():
        try:
            return _conclude(store, job, spec, status, report, error, context)
        except store.errors as exc:
            fault.record("finishing the job", exc)
    if supervised:
        return ABANDONED  # the service that started this process hands the run back
    try:
        became = store.abandon(job.id, job.lease, fault.why())
    except store.errors as exc:
        log.warning("job %s: left to its lease's expiry: %s", job.id, exc, extra=context)
        return ABANDONED
    log.warning("job %s: run handed back; now %s", job.id, became, extra=context)
    if became is not None and became != QUEUED:
        split.settle_parent_of(store, job.id)
    return ABANDONED


def _conclude(store, job, spec, status, report, error, context) -> str | None:
    """Put the job back in the queue or finish it, under its lease."""
    if status == QUEUED:
        store.release(job.id, job.lease)
        log.info("job put back in the queue: this worker is shutting down", extra=context)
        return QUEUED
    if spec.units is None:  # a part is judged with its check, once all parts are in
        report = qualified(spec.qualification, status, report)
    if not store.finish(job.id, job.lease, status, report=report, error=error):
        log.warning("job %s was no longer ours to finish; result dropped", job.id)
        return None
    split.settle_parent_of(store, job.id)
    log.info("job finished: %s", status, extra=context)
    return status


def _execute(spec, store, job, config, started, poller, context) -> tuple:
    """(status, report, error) of running the job; failures are the job's, not ours
    (a failed store call ends the run without an outcome: ``StoreFault``)."""
    try:
        report = _run(spec, store, job, config, started, poller)
    except StoreFailed:
        return ABANDONED, None, None
    except (JobError, CheckpointError, EvalSetError, ServiceError, ValueError) as exc:
        log.warning("job failed: %s", exc, extra=context)
        return "failed", None, str(exc)[:500]
    except Exception as exc:
        return "failed", None, _failure(exc, config, context)
    if poller.fault.happened.is_set():
        return ABANDONED, None, None
    if report["status"] != "stopped":
        return "done", report, None
    try:
        reason = store.stop_request(job.id)
    except store.errors as exc:
        poller.fault.record("reading the stop request", exc)
        return ABANDONED, None, None
    if reason is None and poller.shutdown.is_set():
        return QUEUED, None, None
    status, note = STOPPED[reason]
    return status, report, note


def _deadline(job: JobRecord, spec: JobSpec, poller: StopPoller, grace: float) -> Deadline:
    overrun = Deadline(job.started_at + spec.time_budget_seconds + grace, "timed_out", OVERRAN)
    if poller.seen_at is not None and poller.reason == "cancel":
        late = Deadline(poller.seen_at + grace, "cancelled", "cancelled; the job did not stop")
        return min(overrun, late, key=lambda deadline: deadline.at)
    return overrun


def _failure(exc: Exception, config: WorkerConfig, context: dict) -> str:
    """Log an unexpected failure; return what the operator is shown."""
    # torch reports an allocation refused by the memory cap as RuntimeError, not MemoryError.
    if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc):
        log.warning("job ran out of memory: %s", exc, extra=context)
        return (
            f"the job needed more than its {config.max_memory_bytes // 2**20} MiB memory cap "
            "(QUSEC_ROBUSTNESS_MAX_MEMORY_BYTES); ask for smaller attack parameters or batches"
        )
    log.error("job failed", exc_info=exc, extra=context)
    return f"internal error ({type(exc).__name__}); see the worker's log"


def _run(spec, store, job, config, started, poller) -> dict:
    loaded = load_checkpoint(spec.checkpoint)
    target = Subject.from_checkpoint(loaded)
    if target.sha256 != spec.weights_sha256:
        raise JobError("the checkpoint changed on disk since the service loaded it")
    surrogate = Subject.from_checkpoint(load_checkpoint(spec.surrogate)) if spec.surrogate else None
    data = _samples(spec, store, job.samples_owner, config, poller.fault)
    request = SuiteRequest.from_dict(spec.request)
    remaining = spec.time_budget_seconds - (time.monotonic() - started)
    return run_suite(
        target,
        data,
        request,
        surrogate=surrogate,
        progress=ProgressWriter(store, job.id, job.lease, poller.fault),
        should_stop=budget(remaining, cancelled=poller),
        only_units=spec.units,
    )


def _samples(
    spec: JobSpec, store: JobStore, owner: str, config: WorkerConfig, fault: StoreFault
) -> EvalSet:
    if spec.eval_set is not None:
        return load_eval_set(spec.eval_set)
    try:
        upload = store.samples(owner)
    except store.errors as exc:
        fault.record("reading the uploaded samples", exc)
        raise StoreFailed(fault.why()) from None
    if upload is None:
        raise JobError("the job's uploaded samples are missing")
    return parse_samples(
        upload, spec.input_shape, spec.classes, config.max_upload_images
    ).eval_set()


class StopPoller:
    """``cancelled`` hook for the suite's budget: was this job asked to stop (in the
    store, wherever it was asked), did its lease go, did its store fail, or is this
    worker shutting down?"""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        lost: threading.Event,
        shutdown: threading.Event,
        fault: StoreFault,
    ) -> None:
        self.store, self.job_id, self.lost, self.shutdown = store, job_id, lost, shutdown
        self.fault = fault
        self._checked = float("-inf")
        self.reason: str | None = None
        self.seen_at: float | None = None

    def __call__(self) -> bool:
        now = time.monotonic()
        if self.seen_at is None and now - self._checked >= POLL_SECONDS:
            self._checked = now
            try:
                self.reason = self.store.stop_request(self.job_id)
            except self.store.errors as exc:
                self.fault.record("reading the stop request", exc)
        ended = self.lost.is_set() or self.fault.happened.is_set() or self.shutdown.is_set()
        if self.seen_at is None and (self.reason or ended):
            self.seen_at = time.time()
        return self.seen_at is not None


class ProgressWriter:
    """Writes the suite's progress to the job's row, at most every ``POLL_SECONDS``."""

    def __init__(self, store: JobStore, job_id: str, lease: str, fault: StoreFault) -> None:
        self.store, self.job_id, self.lease, self.fault = store, job_id, lease, fault
        self._written = float("-inf")

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        last = progress.done_batches == progress.total_batches
        if not last and now - self._written < POLL_SECONDS:
            return
        self._written = now
        row = {
            "done_batches": progress.done_batches,
            "total_batches": progress.total_batches,
            "attack": progress.attack,
            "threat_model": progress.threat_model,
            "epsilon": progress.epsilon,
        }
        if self.fault.happened.is_set():
            return
        try:
            self.store.update_progress(self.job_id, self.lease, row)
        except self.store.errors as exc:
            self.fault.record("writing progress", exc)


def _configure_process(config: WorkerConfig) -> None:
    os.nice(config.nice)
    resource.setrlimit(resource.RLIMIT_AS, (config.max_memory_bytes, config.max_memory_bytes))
    torch.set_num_threads(config.threads)
    torch.set_num_interop_threads(1)
    configure_logging(config.log_level, config.log_format)


def _exit_with_service(stdin: TextIO) -> None:
    """Exit as soon as the service process is gone (its end of our stdin closes), so a
    crashed service leaves no orphan burning CPU. Its job is marked interrupted when the
    service restarts (SQLite), or queued again when its lease expires (PostgreSQL)."""

    def watch() -> None:
        # Nothing more is ever written to stdin: read() returns only at end-of-file.
        stdin.read()
        log.warning("the service process went away; the job process exits")
        os._exit(1)

    threading.Thread(target=watch, name="service-watch", daemon=True).start()


def cli(argv: list[str] | None = None) -> None:
    """``qusec-worker`` / ``python -m service.jobs.worker [--loop]``."""
    parser = argparse.ArgumentParser(
        prog="qusec-worker",
        description="Run robustness-check jobs from the job store (QUSEC_JOBS_URL), "
        "without serving HTTP. Settings come from the QUSEC_* environment variables.",
    )
    parser.add_argument(
        "--loop",
        action="store_true",
        help="claim and run queued jobs until SIGTERM (without it: the job process a "
        "service replica starts, configured on stdin)",
    )
    parser.add_argument("--max-jobs", type=int, help="with --loop: exit after this many jobs")
    args = parser.parse_args(argv)
    if not args.loop:
        main()
        return
    try:
        config = WorkerConfig.from_settings(ServiceSettings())
    except ValidationError as exc:
        sys.stderr.write(f"qusec-worker: invalid configuration:\n{exc}\n")
        sys.exit(2)
    _configure_process(config)
    store = config.store()
    store.initialise()
    shutdown = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: shutdown.set())
    log.info("worker started on %s", store.describe())
    ran = work(config, store, shutdown, args.max_jobs)
    log.info("worker stopped after %d jobs", ran)


if __name__ == "__main__":
    cli()
