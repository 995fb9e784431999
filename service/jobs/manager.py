"""One robustness check at a time, in its own process, behind a bounded persistent queue.

The manager is built in the app's lifespan. At startup it opens the job store (SQLite,
or PostgreSQL shared with other replicas and workers), marks jobs a crash left
``running`` in a SQLite store as ``interrupted`` when it runs the jobs itself (their
only runner just restarted; a serving-only process leaves them to the leases),
republishes the gauges of each model's last completed report, and starts:

- the scheduler (unless ``QUSEC_ROBUSTNESS_RUN_JOBS`` is false): the one scheduling loop
  (``scheduling.JobLoop``) on a thread of its own, woken by a submit in this process and
  looking every second for jobs submitted elsewhere. For each job it claims it starts a
  job process (``python -m service.jobs.worker``, a fresh interpreter) and watches it
  until it exits, killing it when it overruns its time budget (or a stop request) by
  more than the grace period;
- the upkeep: every third of a lease it renews the running job's lease, settles expired
  leases (the loop's own code, for a replica that runs no jobs), refreshes the gauges
  from reports finished anywhere, and counts the shared queue.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from service.errors import InvalidSamples, JobFinished, JobQueueFull, JobsUnavailable, UnknownJob
from service.inference.pool import ClassifierPool
from service.jobs import split
from service.jobs.gauges import StoreGauges
from service.jobs.lease import Deadline
from service.jobs.planning import CheckRequest, Target, plan_job
from service.jobs.samples import parse_samples
from service.jobs.scheduling import JobLoop
from service.jobs.spec import JobSpec, WorkerConfig
from service.jobs.store import FINISHED, QUEUED, RUNNING, JobStore, QueueFullError, open_store
from service.jobs.targets import describe_target
from service.metrics import ServiceMetrics
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

WATCH_SECONDS = 0.2
# How often an idle scheduler looks at the queue for jobs other processes submitted.
QUEUE_LOOK_SECONDS = 1.0
# Where ``service`` can be imported from, whatever the service's working directory.
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
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
        self._running: str | None = None
        self._running_parent: str | None = None
        self._running_lease: str | None = None
        self.gauges = StoreGauges(store, metrics)
        # The running job's deadline: set by the scheduler thread, moved by a cancel (on a
        # request's thread) or a shutdown (on the event loop).
        self._deadline: Deadline | None = None
        self._deadline_lock = threading.Lock()
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
        running = self._running
        if running is not None:
            message = "the service shut down while the job ran"
            self._stop_running(running, "shutdown", "interrupted", message)
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
        log.info("job %s queued", job["id"], extra={"job_id": job["id"], "model": target.name})
        self.gauges.count_active()
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

    @_guarded
    def get(self, job_id: str) -> dict:
        job = self.store.get(job_id)
        if job is None:
            raise UnknownJob(f"job {job_id[:64]!r}")
        return job

    @_guarded
    def recent(self, limit: int, status: str | None, model: str | None = None) -> list[dict]:
        return self.store.recent(limit, status, model)

    @_guarded
    def cancel(self, job_id: str) -> dict:
        """Cancel a queued job at once, or ask the running one to stop (partial report kept)."""
        before = self.store.request_stop(job_id, "cancel")
        if before is None:
            raise UnknownJob(f"job {job_id[:64]!r}")
        if before in FINISHED and before != "cancelled":
            raise JobFinished(f"job {job_id} is {before}")
        if before == QUEUED:
            self.metrics.robustness_jobs.labels(status="cancelled").inc()
        if before in (QUEUED, RUNNING):
            split.settle(self.store, job_id)  # a split check whose parts all stopped now
        running = self._running
        if before == RUNNING and job_id in (running, self._running_parent):
            self._stop_running(
                running, None, "cancelled", "cancelled; the job did not stop in time"
            )
        self.gauges.count_active()
        log.info("job %s cancel requested (was %s)", job_id, before, extra={"job_id": job_id})
        return self.get(job_id)

    def _target(self, name: str | None) -> Target:
        classifier = self.pool.lookup(name)  # UnknownModel (404) for a name not served
        return self.targets[classifier.name]

    # The scheduler: ``JobLoop``'s run callback, on the scheduler thread.

    def _run(self, job: dict) -> None:
        try:
            self._watch(job)
        except Exception as exc:  # a scheduler that dies would strand every later job
            log.error("job %s: supervision failed", job["id"], exc_info=exc)
            self.store.finish(job["id"], job["lease"], "failed", None, "internal error")
        finally:
            with self._deadline_lock:
                self._running, self._running_parent, self._deadline = None, None, None
                self._running_lease = None
            self.gauges.count_active()

    def _watch(self, job: dict) -> None:
        """Run ``job`` in a job process and watch it until it exits, killing it past its
        deadline or once its lease is lost."""
        spec = JobSpec.from_dict(job["spec"])
        grace = self.settings.robustness_stop_grace_seconds
        with self._deadline_lock:
            self._running, self._running_parent = job["id"], job["parent_id"]
            self._running_lease = job["lease"]
            self._deadline = Deadline(
                job["started_at"] + spec.time_budget_seconds + grace,
                "timed_out",
                "the job overran its time budget and was stopped without a report",
            )
        self.gauges.count_active()
        process = self._spawn(job)
        killed: Deadline | None = None
        renewed = time.monotonic()
        while process.poll() is None:
            time.sleep(WATCH_SECONDS)
            deadline = self._deadline
            if killed is None and deadline and time.time() > deadline.at:
                killed = deadline
                log.warning("job %s: killing its process (%s)", job["id"], killed.status)
                process.kill()
            # The job process renews the lease too, once it has started; this covers its
            # start-up (importing torch can take long on a loaded host).
            if time.monotonic() - renewed > self.settings.robustness_lease_seconds / 3:
                renewed = time.monotonic()
                if not self._renew(job) and killed is None:
                    log.warning("job %s: lease lost; killing its process", job["id"])
                    killed = Deadline(0, "", "")
                    process.kill()
        process.stdin.close()  # type: ignore[union-attr]
        self._settle(job, process.returncode, killed)

    def _renew(self, job: dict) -> bool:
        lease = self.settings.robustness_lease_seconds
        try:
            return self.store.renew(job["id"], job["lease"], lease)
        except Exception as exc:  # the store is unreachable: the lease may lapse
            log.warning("job %s: lease renewal failed: %s", job["id"], exc)
            return True

    def _spawn(self, job: dict) -> subprocess.Popen:
        config = WorkerConfig.from_settings(self.settings, job_id=job["id"], lease=job["lease"])
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

    def _settle(self, job: dict, exitcode: int | None, killed: Deadline | None) -> None:
        """Finish the job if its process could not; count it; publish a completed report."""
        if killed is not None:
            status, error = killed.status, killed.error
        else:
            status, error = "failed", f"the job process exited with status {exitcode}"
        if status:  # not when the lease was lost: the job is someone else's now
            self.store.finish(job["id"], job["lease"], status, error=error)  # no-op if finished
        split.settle_parent_of(self.store, job["id"])  # no-op unless its last part
        pruned = self.store.prune(self.settings.robustness_keep_finished_jobs)
        if pruned:
            log.info(
                "pruned %d finished jobs beyond the newest %d",
                pruned,
                self.settings.robustness_keep_finished_jobs,
            )
        self.gauges.count_active()
        final = self.store.get(job["id"], with_report=False)
        if final is None or final["status"] not in FINISHED:
            return
        self.metrics.robustness_jobs.labels(status=final["status"]).inc()
        self.gauges.publish_latest()
        log.info("job %s %s", job["id"], final["status"], extra={"job_id": job["id"]})

    # The upkeep.

    async def _keep_up(self) -> None:
        interval = self.settings.robustness_lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self._upkeep_once)
            except Exception as exc:  # the store may be briefly unreachable: try again
                log.error("job upkeep failed: %s", exc)

    def _upkeep_once(self) -> None:
        job_id, lease = self._running, self._running_lease
        if job_id is not None and lease is not None:  # ours is alive, whatever its clock says
            self.store.renew(job_id, lease, self.settings.robustness_lease_seconds)
        self.jobs.settle_expired()
        self.gauges.refresh()

    def _stop_running(self, job_id: str, reason: str | None, status: str, error: str) -> None:
        """Give the running job ``job_id`` the grace period to stop, else it is killed."""
        if self._running != job_id:
            return  # it finished meanwhile
        if reason is not None:
            self.store.request_stop(job_id, reason)
        at = time.time() + self.settings.robustness_stop_grace_seconds
        with self._deadline_lock:
            if self._running == job_id and (self._deadline is None or at < self._deadline.at):
                self._deadline = Deadline(at, status, error)


__all__ = ["QUEUED", "RUNNING", "JobManager"]
