"""The job process: runs one robustness check, off the request path.

Started by the manager as ``python -m service.jobs.worker`` (a fresh interpreter, so it
shares nothing with the serving process but the SQLite file), it reads its configuration
as one JSON line on stdin, sets its own torch thread count and niceness, writes progress
to the job's row, polls the row's stop request (cancel or shutdown) through the suite's
``should_stop`` hook, and finishes the row with the report, partial or complete. Its
stdin stays open for as long as the service lives: at end-of-file it exits.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import sys
import threading
import time
from typing import TextIO

import torch

from models.checkpoint import CheckpointError, load_checkpoint
from models.evalset import EvalSet, EvalSetError, load_eval_set
from robustness.request import SuiteRequest
from robustness.runner import Progress, Subject, budget, run_suite
from service.errors import ServiceError
from service.jobs.samples import parse_samples
from service.jobs.spec import JobSpec, WorkerConfig
from service.jobs.store import JobStore
from service.logs import configure_logging

log = logging.getLogger("service.jobs.worker")

# How often the job process looks at its row for a stop request, and writes progress.
POLL_SECONDS = 0.25
# Final status and note of a suite that stopped early, by the job's stop request.
STOPPED = {
    "cancel": ("cancelled", "cancelled on request; the report holds what was done"),
    "shutdown": ("interrupted", "the service shut down while the job ran"),
    None: ("timed_out", "the time budget ran out; the report holds what was done"),
}


class JobError(Exception):
    """A job cannot run as specified; the message is shown to the operator."""


def main(stdin: TextIO = sys.stdin) -> None:
    """The process entry point: configuration from stdin's first line."""
    started = time.monotonic()
    # Ctrl-C reaches the whole process group; the service decides what happens to the job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = WorkerConfig(**json.loads(stdin.readline()))
    _exit_with_service(stdin)
    os.nice(config.nice)
    resource.setrlimit(resource.RLIMIT_AS, (config.max_memory_bytes, config.max_memory_bytes))
    torch.set_num_threads(config.threads)
    torch.set_num_interop_threads(1)
    configure_logging(config.log_level, config.log_format)
    store = JobStore(config.db_path)
    job = store.get(config.job_id, with_report=False)
    if job is None:
        log.error("job %s not found", config.job_id)
        return
    spec = JobSpec.from_dict(job["spec"])
    context = {"job_id": config.job_id, "model": spec.model}
    log.info("job started", extra=context)
    try:
        report = _run(spec, store, config, started)
    except (JobError, CheckpointError, EvalSetError, ServiceError, ValueError) as exc:
        log.warning("job failed: %s", exc, extra=context)
        store.finish(config.job_id, config.lease, "failed", error=str(exc)[:500])
        return
    except Exception as exc:
        store.finish(config.job_id, config.lease, "failed", error=_failure(exc, config, context))
        return
    status, note = "done", None
    if report["status"] == "stopped":
        status, note = STOPPED[store.stop_request(config.job_id)]
    store.finish(config.job_id, config.lease, status, report=report, error=note)
    log.info("job finished: %s", status, extra={**context, "seconds": report["seconds"]})


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
    return f"internal error ({type(exc).__name__}); see the service log"


def _run(spec: JobSpec, store: JobStore, config: WorkerConfig, started: float) -> dict:
    loaded = load_checkpoint(spec.checkpoint)
    target = Subject.from_checkpoint(loaded)
    if target.sha256 != spec.weights_sha256:
        raise JobError("the checkpoint changed on disk since the service loaded it")
    surrogate = Subject.from_checkpoint(load_checkpoint(spec.surrogate)) if spec.surrogate else None
    data = _samples(spec, store, config)
    request = SuiteRequest.from_dict(spec.request)
    remaining = spec.time_budget_seconds - (time.monotonic() - started)
    return run_suite(
        target,
        data,
        request,
        surrogate=surrogate,
        progress=ProgressWriter(store, config.job_id, config.lease),
        should_stop=budget(remaining, cancelled=StopPoller(store, config.job_id)),
    )


def _samples(spec: JobSpec, store: JobStore, config: WorkerConfig) -> EvalSet:
    if spec.eval_set is not None:
        return load_eval_set(spec.eval_set)
    upload = store.samples(config.job_id)
    if upload is None:
        raise JobError("the job's uploaded samples are missing")
    return parse_samples(
        upload, spec.input_shape, spec.classes, config.max_upload_images
    ).eval_set()


class StopPoller:
    """``cancelled`` hook for the suite's budget: has the service asked this job to stop?"""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id
        self._checked = float("-inf")
        self._stop = False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self._stop and now - self._checked >= POLL_SECONDS:
            self._checked = now
            self._stop = self.store.stop_request(self.job_id) is not None
        return self._stop


class ProgressWriter:
    """Writes the suite's progress to the job's row, at most every ``POLL_SECONDS``."""

    def __init__(self, store: JobStore, job_id: str, lease: str) -> None:
        self.store, self.job_id, self.lease = store, job_id, lease
        self._written = float("-inf")

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        last = progress.done_batches == progress.total_batches
        if not last and now - self._written < POLL_SECONDS:
            return
        self._written = now
        self.store.update_progress(
            self.job_id,
            self.lease,
            {
                "done_batches": progress.done_batches,
                "total_batches": progress.total_batches,
                "attack": progress.attack,
                "threat_model": progress.threat_model,
                "epsilon": progress.epsilon,
            },
        )


def _exit_with_service(stdin: TextIO) -> None:
    """Exit as soon as the service process is gone (its end of our stdin closes), so a
    crashed service leaves no orphan burning CPU; its job is marked interrupted on restart."""

    def watch() -> None:
        # Nothing more is ever written to stdin: read() returns only at end-of-file.
        stdin.read()
        log.warning("the service process went away; the job process exits")
        os._exit(1)

    threading.Thread(target=watch, name="service-watch", daemon=True).start()


if __name__ == "__main__":
    main()
