"""The job gauges, read from the store: with a shared store they describe every replica's
jobs, not just this one's.

``qusec_robustness_active_jobs`` counts the queue; the ``qusec_robust_accuracy_ratio``
series follow each model's newest qualifying check (``service.jobs.qualifying``), wherever
it was made: a check below the bar never moves them. Until a model has one, they show the
report published with its weights (``service.jobs.published``, seeded at startup before
these); ``qusec_robustness_report_source`` says which. The manager refreshes them when a
job of its own finishes and on every upkeep round.
"""

from __future__ import annotations

import logging
import threading

from service.jobs.store import JobStore
from service.metrics import ServiceMetrics

log = logging.getLogger(__name__)


class StoreGauges:
    def __init__(self, store: JobStore, metrics: ServiceMetrics) -> None:
        self.store, self.metrics = store, metrics
        self._shown: dict[str, str] = {}  # model -> id of the job its gauges show
        self._lock = threading.Lock()  # the settle and the upkeep threads both publish

    def refresh(self) -> None:
        self.publish_latest()
        self.count_active()

    def publish_latest(self) -> None:
        with self._lock:
            for model, job_id in self.store.latest_qualifying_ids().items():
                if self._shown.get(model) == job_id:
                    continue
                try:
                    job = self.store.get(job_id)
                    if job is not None:
                        report, finished_at = job.report, job.finished_at
                        self.metrics.publish_robustness_report(
                            model, report, finished_at, source="check"
                        )
                except (KeyError, TypeError, ValueError) as exc:  # one bad row stops nothing
                    log.warning("job %s: its report cannot be published (%r)", job_id, exc)
                self._shown[model] = job_id

    def count_active(self) -> None:
        for status, count in self.store.count_active().items():
            self.metrics.set_active_jobs(status, count)
