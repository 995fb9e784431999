"""One robustness check at a time, in its own process, behind a bounded persistent queue.

The manager is built in the app's lifespan. At startup it marks jobs a crash left
``running`` as ``interrupted``, republishes the gauges of each model's last completed
report, and starts the scheduler task: it claims the oldest queued job, starts a job
process for it (``python -m service.jobs.worker``, a fresh interpreter) and watches it
until it exits, killing it when it overruns its time budget (or a stop request) by more
than the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.checkpoint import CheckpointError, read_manifest
from models.evalset import EvalSetError, eval_set_path, load_eval_set
from robustness.cli import default_surrogate
from service.classifier import Classifier
from service.errors import InvalidSamples, JobFinished, JobQueueFull, UnknownJob
from service.jobs import worker
from service.jobs.checks import CheckRequest, JobSpec, Target, plan_job
from service.jobs.samples import parse_samples
from service.jobs.store import FINISHED, QUEUED, RUNNING, JobStore, QueueFullError
from service.metrics import ServiceMetrics
from service.pool import ClassifierPool, StartupError
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

WATCH_SECONDS = 0.2
# Where ``service`` can be imported from, whatever the service's working directory.
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
INTERRUPTED_BY_CRASH = "the service stopped unexpectedly while the job ran"


@dataclass
class _Deadline:
    """When the running job's process is killed, and what the job is then marked."""

    at: float
    status: str
    error: str


class JobManager:
    def __init__(
        self,
        settings: ServiceSettings,
        metrics: ServiceMetrics,
        store: JobStore,
        pool: ClassifierPool,
        targets: dict[str, Target],
    ) -> None:
        self.settings, self.metrics, self.store = settings, metrics, store
        self.pool, self.targets = pool, targets
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._running: str | None = None
        self._deadline: _Deadline | None = None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._submitting = threading.Lock()

    @classmethod
    def open(
        cls, settings: ServiceSettings, metrics: ServiceMetrics, pool: ClassifierPool
    ) -> JobManager:
        """Open the store, recover from a crash, and describe every served model."""
        store = JobStore(settings.robustness_db)
        store.initialise()
        for job_id in store.interrupt_running(INTERRUPTED_BY_CRASH):
            log.warning("job %s was running when the service stopped", job_id)
            metrics.robustness_jobs.labels(status="interrupted").inc()
        store.prune(settings.robustness_keep_finished_jobs)
        targets = {c.name: describe_target(c, settings) for c in pool.classifiers.values()}
        manager = cls(settings, metrics, store, pool, targets)
        for model, job in store.latest_done().items():
            metrics.publish_robustness_report(model, job["report"], job["finished_at"])
        manager._count_active()
        return manager

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._schedule(), name="robustness-jobs")

    async def stop(self) -> None:
        """Ask a running job to hand back partial results, then stop the scheduler."""
        self._stopping = True
        self._wake.set()
        if self._running is not None:
            message = "the service shut down while the job ran"
            self._stop_running(self._running, "shutdown", "interrupted", message)
        if self._task is not None:
            await asyncio.wait([self._task])

    def wake(self) -> None:
        """Tell the scheduler a job was queued (on the event loop)."""
        self._wake.set()

    # Requests (called on worker threads: SQLite and upload parsing block).

    def submit(self, body: CheckRequest, upload: bytes | None) -> dict:
        target = self._target(body.model)
        if upload is not None:
            limit = self.settings.robustness_max_upload_images
            samples = parse_samples(upload, target.input_shape, target.classes, limit)
            available = len(samples.labels)
        elif target.eval_set is None:
            raise InvalidSamples(
                str(target.eval_set_problem),
                message=f"no bundled evaluation set for {target.dataset}; upload samples",
            )
        else:
            available = target.eval_set_size
        spec = plan_job(body, target, available, upload is not None, self.settings)
        with self._submitting:  # the queued-cost check and the insert, as one step
            self._check_queued_cost(spec.cost)
            try:
                job = self.store.submit(
                    target.name, spec.as_dict(), upload, self.settings.robustness_queue_size + 1
                )
            except QueueFullError as exc:
                raise JobQueueFull(str(exc)) from None
        log.info("job %s queued", job["id"], extra={"job_id": job["id"], "model": target.name})
        self._count_active()
        return job

    def _check_queued_cost(self, cost: int) -> None:
        """Refuse a job that would take the queued and running checks past the cost limit."""
        limit = self.settings.robustness_max_queued_cost
        active = self.store.recent(self.settings.robustness_queue_size + 1, QUEUED)
        active += self.store.recent(1, RUNNING)
        waiting = sum(int(job["spec"].get("cost", 0)) for job in active)
        if waiting + cost > limit:
            message = (
                f"queued and running checks would cost {waiting + cost:,} model evaluations, "
                f"over QUSEC_ROBUSTNESS_MAX_QUEUED_COST ({limit:,})"
            )
            raise JobQueueFull(message, message=message)

    def get(self, job_id: str) -> dict:
        job = self.store.get(job_id)
        if job is None:
            raise UnknownJob(f"job {job_id[:64]!r}")
        return job

    def recent(self, limit: int, status: str | None) -> list[dict]:
        return self.store.recent(limit, status)

    def cancel(self, job_id: str) -> dict:
        """Cancel a queued job at once, or ask the running one to stop (partial report kept)."""
        before = self.store.request_stop(job_id, "cancel")
        if before is None:
            raise UnknownJob(f"job {job_id[:64]!r}")
        if before in FINISHED and before != "cancelled":
            raise JobFinished(f"job {job_id} is {before}")
        if before == QUEUED:
            self.metrics.robustness_jobs.labels(status="cancelled").inc()
        elif before == RUNNING and self._running == job_id:
            # The deadline belongs to the scheduler, which lives on the event loop.
            self._loop.call_soon_threadsafe(  # type: ignore[union-attr]
                self._stop_running,
                job_id,
                None,
                "cancelled",
                "cancelled; the job did not stop in time",
            )
        self._count_active()
        log.info("job %s cancel requested (was %s)", job_id, before, extra={"job_id": job_id})
        return self.get(job_id)

    def _target(self, name: str | None) -> Target:
        classifier = self.pool.lookup(name)  # UnknownModel (404) for a name not served
        return self.targets[classifier.name]

    # The scheduler.

    async def _schedule(self) -> None:
        while not self._stopping:
            self._wake.clear()
            job = await asyncio.to_thread(self.store.claim_next)
            if job is None:
                await self._wake.wait()
                continue
            if self._stopping:  # claimed while shutting down: it runs after the restart
                await asyncio.to_thread(self.store.release, job["id"], job["lease"])
                break
            try:
                await self._run(job)
            except Exception as exc:  # a scheduler that dies would strand every later job
                log.error("job %s: supervision failed", job["id"], exc_info=exc)
                await asyncio.to_thread(
                    self.store.finish, job["id"], job["lease"], "failed", None, "internal error"
                )
            self._running, self._deadline = None, None
            self._count_active()

    async def _run(self, job: dict) -> None:
        spec = JobSpec.from_dict(job["spec"])
        self._running = job["id"]
        grace = self.settings.robustness_stop_grace_seconds
        self._deadline = _Deadline(
            job["started_at"] + spec.time_budget_seconds + grace,
            "timed_out",
            "the job overran its time budget and was stopped without a report",
        )
        self._count_active()
        process = await asyncio.to_thread(self._spawn, job)
        killed: _Deadline | None = None
        while process.poll() is None:
            await asyncio.sleep(WATCH_SECONDS)
            if killed is None and self._deadline and time.time() > self._deadline.at:
                killed = self._deadline
                log.warning("job %s: killing its process (%s)", job["id"], killed.status)
                process.kill()
        process.stdin.close()  # type: ignore[union-attr]
        await asyncio.to_thread(self._settle, job, process.returncode, killed)

    def _spawn(self, job: dict) -> subprocess.Popen:
        config = worker.WorkerConfig(
            db_path=str(self.settings.robustness_db.resolve()),
            job_id=job["id"],
            lease=job["lease"],
            threads=self.settings.robustness_threads,
            nice=self.settings.robustness_nice,
            max_memory_bytes=self.settings.robustness_max_memory_bytes,
            log_level=self.settings.log_level,
            log_format=self.settings.log_format,
            max_upload_images=self.settings.robustness_max_upload_images,
        )
        # stdin carries the configuration, then stays open: the job process exits when
        # it closes, which is also what happens when this process dies.
        process = subprocess.Popen(
            [sys.executable, "-m", "service.jobs.worker"],
            stdin=subprocess.PIPE,
            cwd=_SOURCE_ROOT,
            env=self._job_environment(),
        )
        process.stdin.write(config.to_line())  # type: ignore[union-attr]
        process.stdin.flush()  # type: ignore[union-attr]
        log.info("job %s running in process %d", job["id"], process.pid)
        return process

    def _job_environment(self) -> dict[str, str]:
        # Settings reach the job process in its configuration line, not the environment,
        # so the admin token stays behind; OpenMP's pool is capped before torch starts.
        threads = str(self.settings.robustness_threads)
        environment = {k: v for k, v in os.environ.items() if not k.startswith("QUSEC_")}
        return {**environment, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}

    def _settle(self, job: dict, exitcode: int | None, killed: _Deadline | None) -> None:
        """Finish the job if its process could not; count it; publish a completed report."""
        if killed is not None:
            status, error = killed.status, killed.error
        else:
            status, error = "failed", f"the job process exited with status {exitcode}"
        self.store.finish(job["id"], job["lease"], status, error=error)  # no-op if finished
        pruned = self.store.prune(self.settings.robustness_keep_finished_jobs)
        if pruned:
            log.info(
                "pruned %d finished jobs beyond the newest %d",
                pruned,
                self.settings.robustness_keep_finished_jobs,
            )
        self._count_active()
        final = self.store.get(job["id"])
        if final is None:
            return
        self.metrics.robustness_jobs.labels(status=final["status"]).inc()
        if final["status"] == "done":
            self.metrics.publish_robustness_report(
                final["model"], final["report"], final["finished_at"]
            )
        log.info("job %s %s", job["id"], final["status"], extra={"job_id": job["id"]})

    def _stop_running(self, job_id: str, reason: str | None, status: str, error: str) -> None:
        """Give the running job ``job_id`` the grace period to stop, else it is killed."""
        if self._running != job_id:
            return  # it finished meanwhile
        if reason is not None:
            self.store.request_stop(job_id, reason)
        at = time.time() + self.settings.robustness_stop_grace_seconds
        if self._deadline is None or at < self._deadline.at:
            self._deadline = _Deadline(at, status, error)

    def _count_active(self) -> None:
        for status, count in self.store.count_active().items():
            self.metrics.robustness_active_jobs.labels(status=status).set(count)


def describe_target(classifier: Classifier, settings: ServiceSettings) -> Target:
    """What a served model offers the job system: its surrogate and its bundled samples."""
    manifest = classifier.manifest
    surrogate, surrogate_problem = find_surrogate(classifier, settings)
    eval_path = eval_set_path(manifest.dataset, settings.eval_dir)
    try:
        size, eval_problem = len(load_eval_set(eval_path).labels), None
    except EvalSetError as exc:
        size, eval_problem = 0, str(exc)
        log.warning("model %s: no bundled evaluation set: %s", classifier.name, exc)
    return Target(
        name=classifier.name,
        dataset=manifest.dataset,
        checkpoint=classifier.path.resolve(),
        weights_sha256=manifest.weights_sha256,
        input_shape=tuple(manifest.input_shape),  # type: ignore[arg-type]
        classes=len(manifest.class_names),
        quantized=manifest.quantizer.get("kind", "none") != "none",
        surrogate=surrogate,
        surrogate_problem=surrogate_problem,
        eval_set=eval_path if eval_problem is None else None,
        eval_set_size=size,
        eval_set_problem=eval_problem,
    )


def find_surrogate(classifier: Classifier, settings: ServiceSettings) -> tuple[Any, str | None]:
    """The undefended checkpoint transfer attacks craft on, or why there is none.

    ``QUSEC_ROBUSTNESS_SURROGATE`` serves the models of its own dataset; otherwise the
    suite's own rule applies: ``<dataset>-undefended`` beside the served checkpoint.
    """
    manifest = classifier.manifest
    configured = settings.robustness_surrogate
    if configured is not None:
        try:
            configured_manifest = read_manifest(configured)
        except CheckpointError as exc:
            raise StartupError(f"QUSEC_ROBUSTNESS_SURROGATE: {exc}") from None
        path = configured if configured_manifest.dataset == manifest.dataset else None
    else:
        path = None
    path = path or default_surrogate(classifier.path, manifest.dataset)
    if path is None:
        return None, (
            f"no undefended surrogate: no checkpoint folder {manifest.dataset}-undefended "
            "beside the served checkpoint and QUSEC_ROBUSTNESS_SURROGATE is not set"
        )
    try:
        found = read_manifest(path)
    except CheckpointError as exc:
        return None, f"the surrogate is unreadable ({exc})"
    if found.weights_sha256 == manifest.weights_sha256:
        return None, "the model is its own surrogate (transfer would equal naive white-box)"
    if found.quantizer.get("kind", "none") != "none":
        return None, f"the surrogate {path} is defended; transfer needs an undefended model"
    return path.resolve(), None


def public_job(job: dict[str, Any], with_report: bool) -> dict[str, Any]:
    """A job as the admin API shows it."""
    spec = job["spec"]
    body = {
        "id": job["id"],
        "status": job["status"],
        "model": job["model"],
        "samples": "uploaded" if spec["eval_set"] is None else Path(spec["eval_set"]).name,
        "request": spec["request"],
        "time_budget_seconds": spec["time_budget_seconds"],
        "estimated_cost": spec.get("cost"),
        "created_at": _iso(job["created_at"]),
        "started_at": _iso(job["started_at"]),
        "finished_at": _iso(job["finished_at"]),
        "progress": _progress(job),
        "cancel_requested": job["stop_request"] == "cancel",
        "error": job["error"],
        "worst_case": job["headline"],
    }
    if with_report:
        body["report"] = job.get("report")
    return body


def _progress(job: dict[str, Any]) -> dict[str, Any]:
    progress = dict(job["progress"] or {"done_batches": 0, "total_batches": 0})
    total = progress["total_batches"]
    progress["fraction"] = round(progress["done_batches"] / total, 4) if total else 0.0
    return progress


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


__all__ = ["QUEUED", "RUNNING", "JobManager", "public_job"]
