"""One robustness check at a time, in its own process, behind a bounded persistent queue.

The manager is built in the app's lifespan. At startup it opens the job store (SQLite,
or PostgreSQL shared with other replicas and workers), marks jobs a crash left
``running`` in a SQLite store as ``interrupted`` when it runs the jobs itself (their
only runner just restarted; a serving-only process leaves them to the leases),
republishes the gauges of each model's last completed report, and starts:

- the scheduler (unless ``QUSEC_ROBUSTNESS_RUN_JOBS`` is false): the one scheduling loop
  (``scheduling.JobLoop``) on a thread of its own, woken by a submit in this process and
  looking every second for jobs submitted elsewhere. For each job it claims it starts a
  job process and watches it until it exits (``supervision.JobProcess``: deadlines, the
  lease), then settles the job, trying again until the store lets it;
- the upkeep: every third of a lease it settles expired leases (the loop's own code, for
  a replica that runs no jobs), refreshes the gauges from reports finished anywhere, and
  counts the shared queue.

A store that fails (down, or refusing writes) never stops either: requests answer 503
``jobs_unavailable`` meanwhile, and both carry on once it is back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from service.errors import InvalidSamples, JobFinished, JobQueueFull, JobsUnavailable, UnknownJob
from service.inference.pool import ClassifierPool
from service.jobs import split
from service.jobs.gauges import StoreGauges
from service.jobs.lease import first_line
from service.jobs.planning import CheckRequest, Target, plan_job
from service.jobs.samples import parse_samples
from service.jobs.scheduling import JobLoop
from service.jobs.store import (
    FINISHED,
    QUEUED,
    RUNNING,
    JobRecord,
    JobStore,
    QueueFullError,
    open_store,
)
from service.jobs.supervision import ABANDON, Ending, JobProcess
from service.jobs.targets import describe_target
from service.metrics import ServiceMetrics
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

# How often an idle scheduler looks at the queue for jobs other processes submitted.
QUEUE_LOOK_SECONDS = 1.0
# The longest pause between tries to settle a job while its store fails.
SETTLE_RETRY_SECONDS = 5.0
INTERRUPTED_BY_CRASH = "the service stopped unexpectedly while the job ran"
T = TypeVar("T")


@contextmanager
def store_errors(store: JobStore) -> Iterator[None]:
    """A database that cannot be opened, read or written is ``JobsUnavailable`` (503),
    naming the file and the setting, not a 500; classification never touches it."""
    try:
        yield
    except store.errors as exc:
        problem = f"the job store {store.describe()} ({store.setting}) is unusable: {exc}"
        raise JobsUnavailable(problem, message=problem) from None


def _guarded(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def wrapper(self: JobManager, *args: Any, **kwargs: Any) -> T:
        with store_errors(self.store):
            return method(self, *args, **kwargs)

    return wrapper


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
        self.jobs = JobLoop(
            store,
            settings.robustness_lease_seconds,
            self._run,
            idle_seconds=QUEUE_LOOK_SECONDS,
            metrics=metrics,
        )
        self._stop = threading.Event()
        self._scheduler: threading.Thread | None = None
        self._upkeep: asyncio.Task | None = None
        # The job process being watched: set by the scheduler thread, read by a cancel
        # (on a request's thread) or a shutdown (on the event loop).
        self._current: JobProcess | None = None
        self.gauges = StoreGauges(store, metrics)
        self._stopping = False
        self._submitting = threading.Lock()

    @classmethod
    def open(
        cls, settings: ServiceSettings, metrics: ServiceMetrics, pool: ClassifierPool
    ) -> JobManager:
        """Open the store, recover from a crash, and describe every served model.

        ``JobsUnavailable`` names the store and its setting when it cannot be used."""
        metrics.prepare_job_statuses(FINISHED, (QUEUED, RUNNING))
        url = settings.jobs_url.get_secret_value() if settings.jobs_url else None
        store = open_store(url, settings.robustness_db)
        with store_errors(store):
            store.initialise()
            log.info("job store: %s", store.describe())
            # A job left running in a store this host alone uses was interrupted by a crash,
            # unless another process runs the jobs (a supervised worker 0, a qusec-worker):
            # only a process that runs jobs recovers them; the rest is the leases' work.
            if not store.shared and settings.robustness_run_jobs:
                for job_id in store.interrupt_running(INTERRUPTED_BY_CRASH):
                    log.warning("job %s was running when the service stopped", job_id)
                    metrics.robustness_jobs.labels(status="interrupted").inc()
            store.prune(settings.robustness_keep_finished_jobs)
        targets = {c.name: describe_target(c, settings) for c in pool.classifiers.values()}
        manager = cls(settings, metrics, store, pool, targets)
        with store_errors(store):
            manager.gauges.refresh()
        return manager

    def start(self) -> None:
        if self.settings.robustness_run_jobs:
            self._scheduler = threading.Thread(
                target=self.jobs.run, args=(self._stop,), name="robustness-jobs", daemon=True
            )
            self._scheduler.start()
        self._upkeep = asyncio.create_task(self._keep_up(), name="robustness-upkeep")

    async def stop(self) -> None:
        """Ask a running job to hand back partial results, then stop the scheduler."""
        self._stopping = True
        self._stop.set()
        self.jobs.wake.set()
        current = self._current
        if current is not None:
            message = "the service shut down while the job ran"
            try:
                self._stop_running(current, "shutdown", "interrupted", message)
            except self.store.errors as exc:  # its deadline is set: it is killed past it
                log.warning("job %s: cannot ask it to stop: %s", current.job.id, exc)
        if self._scheduler is not None:
            await asyncio.to_thread(self._scheduler.join)
        if self._upkeep is not None:
            self._upkeep.cancel()
            await asyncio.wait([self._upkeep])

    def wake(self) -> None:
        """Tell the scheduler a job was queued."""
        self.jobs.wake.set()

    # Requests (called on worker threads: SQLite and upload parsing block).

    @_guarded
    def submit(self, body: CheckRequest, upload: bytes | None) -> JobRecord:
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
        parts = None
        if self.settings.robustness_split_units:
            model = self.pool.lookup(target.name).model
            parts = split.plan_parts(spec, target.dataset, model)
        with self._submitting:  # the queued-cost check and the insert, as one step
            self._check_queued_cost(spec.cost)
            try:
                job = self.store.submit(
                    target.name,
                    spec.as_dict(),
                    upload,
                    self.settings.robustness_queue_size + 1,
                    parts=[part.as_dict() for part in parts] if parts else None,
                )
            except QueueFullError as exc:
                raise JobQueueFull(str(exc)) from None
        log.info("job %s queued", job.id, extra={"job_id": job.id, "model": target.name})
        self.gauges.count_active()
        return job

    def _check_queued_cost(self, cost: int) -> None:
        """Refuse a job that would take the queued and running checks past the cost limit."""
        limit = self.settings.robustness_max_queued_cost
        active = self.store.recent(self.settings.robustness_queue_size + 1, QUEUED)
        active += self.store.recent(1, RUNNING)
        waiting = sum(int(job.spec.get("cost", 0)) for job in active)
        if waiting + cost > limit:
            message = (
                f"queued and running checks would cost {waiting + cost:,} model evaluations, "
                f"over QUSEC_ROBUSTNESS_MAX_QUEUED_COST ({limit:,})"
            )
            raise JobQueueFull(message, message=message)

    @_guarded
    def get(self, job_id: str) -> JobRecord:
        job = self.store.get(job_id)
        if job is None:
            raise UnknownJob(f"job {job_id[:64]!r}")
        return job

    @_guarded
    def recent(self, limit: int, status: str | None, model: str | None = None) -> list[JobRecord]:
        return self.store.recent(limit, status, model)

    @_guarded
    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job at once, or ask the running one to stop (partial report kept)."""
        before = self.store.request_stop(job_id, "cancel")
        if before is None:
            raise UnknownJob(f"job {job_id[:64]!r}")
        if before in FINISHED and before != "cancelled":
            raise JobFinished(f"job {job_id} is {before}")
        if before == QUEUED:
            self.metrics.robustness_jobs.labels(status="cancelled").inc()
        if before == RUNNING:
            # A holder that is gone cannot read the flag: once its lease has lapsed, the
            # job is cancelled here and now rather than at the next look.
            self.jobs.settle_expired()
        if before in (QUEUED, RUNNING):
            split.settle(self.store, job_id)  # a split check whose parts all stopped now
        current = self._current
        ours = current is not None and job_id in (current.job.id, current.job.parent_id)
        if before == RUNNING and ours:
            error = "cancelled; the job did not stop in time"
            self._stop_running(current, None, "cancelled", error)
        self.gauges.count_active()
        log.info("job %s cancel requested (was %s)", job_id, before, extra={"job_id": job_id})
        return self.get(job_id)

    def _target(self, name: str | None) -> Target:
        classifier = self.pool.lookup(name)  # UnknownModel (404) for a name not served
        return self.targets[classifier.name]

    # The scheduler: ``JobLoop``'s run callback, on the scheduler thread.

    def _run(self, job: JobRecord) -> None:
        """Run ``job`` in a job process, then settle it. Never raises: a scheduler that
        dies would strand every later job."""
        try:
            self._current = JobProcess(job, self.store, self.settings)
            self._count_active()
            ending = self._current.run()
        except Exception as exc:
            log.error("job %s: supervision failed", job.id, exc_info=exc)
            ending = Ending("failed", "internal error")
        finally:
            self._current = None
        self._settle_eventually(job, ending)

    def _settle_eventually(self, job: JobRecord, ending: Ending) -> None:
        """Settle the job as soon as the store lets us, trying again while it fails (down,
        or refusing writes). Nothing renews the lease meanwhile, so if this process stops
        first, the lease's expiry settles the job instead."""
        pause = min(SETTLE_RETRY_SECONDS, self.settings.robustness_lease_seconds / 3)
        tries = 0
        while True:
            try:
                self._settle(job, ending)
                return
            except self.store.errors as exc:
                if tries == 0:
                    log.warning(
                        "job %s: cannot settle it while the job store fails (%s); trying again",
                        job.id,
                        first_line(exc),
                    )
                tries += 1
            if self._stop.wait(pause):
                log.warning("job %s: left to its lease's expiry at shutdown", job.id)
                return

    def _settle(self, job: JobRecord, ending: Ending) -> None:
        """Finish the job if its process could not, or hand a lost run back; count it;
        publish a completed report."""
        lease = job.lease or ""
        if ending.status == ABANDON:
            became = self.store.abandon(job.id, lease, ending.error or "")
            if became is not None:
                log.warning("job %s: its run was lost (%s); now %s", job.id, ending.error, became)
        elif ending.status:  # not when the lease was lost: the job is someone else's now
            self.store.finish(job.id, lease, ending.status, error=ending.error)  # no-op if done
        split.settle_parent_of(self.store, job.id)  # no-op unless its last part
        pruned = self.store.prune(self.settings.robustness_keep_finished_jobs)
        if pruned:
            log.info(
                "pruned %d finished jobs beyond the newest %d",
                pruned,
                self.settings.robustness_keep_finished_jobs,
            )
        self.gauges.count_active()
        final = self.store.get(job.id, with_report=False)
        if final is None or not final.finished:
            return
        self.metrics.robustness_jobs.labels(status=final.status).inc()
        try:
            self.gauges.publish_latest()
        except self.store.errors as exc:  # the upkeep publishes it at its next round
            log.warning("job %s: its report's gauges wait for the store: %s", job.id, exc)
        log.info("job %s %s", job.id, final.status, extra={"job_id": job.id})

    def _count_active(self) -> None:
        try:
            self.gauges.count_active()
        except self.store.errors as exc:  # the upkeep counts again at its next round
            log.warning("cannot count the queue: %s", first_line(exc))

    # The upkeep.

    async def _keep_up(self) -> None:
        interval = self.settings.robustness_lease_seconds / 3
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self._upkeep_once)
            except self.store.errors as exc:  # down or refusing writes: try again, quietly
                if not failing:
                    log.warning("job upkeep: the job store fails: %s", first_line(exc))
                failing = True
                continue
            except Exception as exc:
                log.error("job upkeep failed", exc_info=exc)
                continue
            if failing:
                log.warning("job upkeep: the job store answers again")
            failing = False

    def _upkeep_once(self) -> None:
        self.jobs.settle_expired()
        self.gauges.refresh()

    def _stop_running(
        self, current: JobProcess, reason: str | None, status: str, error: str
    ) -> None:
        """Give the running job the grace period to stop, else its process is killed."""
        at = time.time() + self.settings.robustness_stop_grace_seconds
        current.stop_by(at, status, error)
        if reason is not None:
            self.store.request_stop(current.job.id, reason)


__all__ = ["QUEUED", "RUNNING", "JobManager"]
