"""Every Prometheus metric the service exports, defined in this one module.

Each app gets its own ``CollectorRegistry`` (built in ``create_app``), so tests
can create many apps in one process. Names carry base units (``_seconds``,
``_bytes``), counters end in ``_total``, labels are low-cardinality (route
templates, stage names, reason codes, model names), and label values known up
front are created at zero so dashboards and alerts see them before they happen.

Under a supervisor (``QUSEC_WORKERS`` > 1, ``service.supervisor``) every worker
writes its samples to the directory in ``PROMETHEUS_MULTIPROC_DIR`` and any worker's
``/metrics`` reports them all: counters and histograms summed, each gauge by its
``multiprocess_mode`` (in-flight and queue depth summed over live workers, readiness
the minimum). ``process_*`` then describe the worker processes together. The job
gauges are read from the job store, which every worker sees alike, so they are kept
per process (``_StoreSnapshot``) and reported by whichever worker answers.

Two scrapes: ``/metrics`` is public and shows serving; every ``qusec_robust*`` series
(robust accuracy, report times, the job queue) is admin-only, on ``/admin/metrics``.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from service.errors import REJECTION_REASONS

STAGES = ("read", "decode", "quantize", "queue_wait", "inference", "encode")

# Fitted to a tiny CNN on CPU: stages take tens of microseconds to a few
# milliseconds; the tail up to 10 s covers the request timeout.
STAGE_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
REQUEST_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# MNIST PNGs are a few hundred bytes; photos are megabytes; the default limit is 5 MiB.
BODY_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Where a model's robust-accuracy series come from: the report published with its weights
# (docs/results/, service/jobs/published.py) until its first qualifying check in the job
# store, then that check (service/jobs/gauges.py).
REPORT_SOURCES = ("published", "check")


METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Where each supervised worker leaves a file named after its pid (see WorkerGroupCollector).
_WORKER_PIDS = "workers"


class ServiceMetrics:
    def __init__(self, multiprocess: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.store_snapshot = _StoreSnapshot()
        self._define_http_metrics(self.registry)
        self._define_pipeline_metrics(self.registry)
        self._define_robustness_metrics(self.registry)
        if multiprocess:
            exposed = _multiprocess_registry(self.store_snapshot)
        else:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            self.registry.register(self.store_snapshot)
            exposed = self.registry
        self._public = _selection(exposed, robustness=False)
        self._robustness = _selection(exposed, robustness=True)
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason=reason)
        # The labelled children the hot path touches on every request, looked up once:
        # ``labels()`` takes a lock and builds a key each time.
        self._stages = {stage: self.stage_duration.labels(stage=stage) for stage in STAGES}
        self._request_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._model_children: dict[str, tuple[Any, Any]] = {}
        self._pending = PendingUpdates()

    def _define_http_metrics(self, r: CollectorRegistry) -> None:
        self.requests = Counter(
            "qusec_http_requests_total",
            "HTTP requests answered, by route template, method and status code.",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "qusec_http_request_duration_seconds",
            "Time from request start to response start, by route template.",
            ["endpoint"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.rejections = Counter(
            "qusec_rejections_total", "Requests refused, by reason code.", ["reason"], registry=r
        )
        self.body_size = Histogram(
            "qusec_request_body_bytes",
            "Size of accepted request bodies.",
            buckets=BODY_BUCKETS,
            registry=r,
        )
        self.open_connections = Gauge(
            "qusec_open_connections",
            "HTTP connections open, per serving process (under a supervisor: by pid).",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.in_flight = Gauge(
            "qusec_in_flight_requests",
            "Inference requests being served.",
            registry=r,
            multiprocess_mode="livesum",
        )

    def _define_pipeline_metrics(self, r: CollectorRegistry) -> None:
        self.stage_duration = Histogram(
            "qusec_stage_duration_seconds",
            "Time each request spent in each pipeline stage.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "qusec_batch_size",
            "Rows in each batch sent to the model.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "qusec_queue_depth",
            "Jobs waiting for the inference worker.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.model_info = Gauge(
            "qusec_model_info",
            "Loaded models (value 1) with their defence and weights digest.",
            ["model", "dataset", "architecture", "quantizer", "levels", "weights_sha256", "device"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.ready = Gauge(
            "qusec_ready",
            "1 once models are loaded and warmed up (in every worker).",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.startup_duration = Gauge(
            "qusec_startup_duration_seconds",
            "Time from app start to ready (loading and warm-up; the slowest worker).",
            registry=r,
            multiprocess_mode="livemax",
        )

    def _define_robustness_metrics(self, r: CollectorRegistry) -> None:
        # The report and queue gauges are the store snapshot's (see the module docstring).
        self.robustness_jobs = Counter(
            "qusec_robustness_jobs_total",
            "Robustness-check jobs that reached a final status, by status.",
            ["status"],
            registry=r,
        )

    def prepare_job_statuses(self, finished: tuple[str, ...], active: tuple[str, ...]) -> None:
        """Create the job-status series at zero; the job store, above this module, owns the
        statuses and tells them when the job system starts."""
        for status in finished:
            self.robustness_jobs.labels(status=status)
        for status in active:
            self.store_snapshot.active_jobs.setdefault(status, 0)

    def publish_robustness_report(
        self, model: str, report: dict, finished_at: float, source: str = "check"
    ) -> None:
        """Replace ``model``'s robust-accuracy series with those of ``report``, which comes
        from ``source`` (one of ``REPORT_SOURCES``)."""
        if source not in REPORT_SOURCES:
            raise ValueError(f"unknown report source {source!r}")
        self.store_snapshot.robust_accuracy[model] = robust_accuracy_series(report)
        self.store_snapshot.report_time[model] = finished_at
        self.store_snapshot.report_source[model] = source

    def report_source(self, model: str) -> str | None:
        """Where ``model``'s robust-accuracy series come from now; None: it has none."""
        return self.store_snapshot.report_source.get(model)

    def set_active_jobs(self, status: str, count: int) -> None:
        self.store_snapshot.active_jobs[status] = count

    # The per-request updates below go through ``PendingUpdates``: made on an event loop,
    # they are applied together a moment later; anywhere else at once.

    def observe_stages(self, timings: dict[str, float]) -> None:
        stages = self._stages
        self._pending.update(
            (stages[stage], seconds) for stage, seconds in timings.items() if stage in stages
        )

    def observe_body(self, size: int) -> None:
        """An accepted request body of ``size`` bytes."""
        self._pending.observe(self.body_size, size)

    def track_in_flight(self, read: Callable[[], int]) -> None:
        """The in-flight gauge reads ``read()`` whenever pending updates are applied."""
        self._pending.sample(self.in_flight, read)

    def observe_batch(self, model: str, rows: int) -> None:
        """A batch of ``rows`` sent to ``model``."""
        self._pending.observe(self._model(model)[0], rows)

    def track_queue_depth(self, model: str, read: Callable[[], int]) -> None:
        """``model``'s queue-depth gauge reads ``read()`` whenever pending updates are
        applied."""
        self._pending.sample(self._model(model)[1], read)

    def _model(self, model: str) -> tuple[Any, Any]:
        children = self._model_children.get(model)
        if children is None:
            children = (self.batch_size.labels(model=model), self.queue_depth.labels(model=model))
            self._model_children[model] = children
        return children

    def apply_pending(self) -> None:
        """Apply the pending updates now (at shutdown)."""
        self._pending.apply()

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """One answered request: its count by status, its latency by route."""
        key = (endpoint, method, str(status))
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(endpoint=endpoint, method=method, status=key[2]),
                self.request_duration.labels(endpoint=endpoint),
            )
            self._request_children[key] = children
        self._pending.update(((children[1], seconds),), ((children[0], 1),))

    def exposition(self) -> bytes:
        """The public scrape (``/metrics``): everything but the robustness series."""
        self._pending.apply()
        return generate_latest(self._public)

    def robustness_exposition(self) -> bytes:
        """The admin scrape (``/admin/metrics``): the robustness series alone."""
        return generate_latest(self._robustness)


# How long per-request updates made on an event loop may wait before they are applied.
PENDING_SECONDS = 0.05


class PendingUpdates:
    """Metric updates made on an event loop, applied together at most ``interval`` seconds
    after the first of them; updates made anywhere else are applied at once.

    Under a supervisor each value of a metric lives in a memory-mapped file
    (prometheus_client's multiprocess mode): every counter increment is a locked write to
    it, and a histogram observation is two. A serving process makes about ten such
    updates a request, all on its event loop; they took about an eighth of its time there
    (py-spy, docs/service.md). Applied together, the requests of one interval (a few dozen
    at full load) cost one write per counter, histogram bucket and sum they touched: a
    counter's increments are added up, a histogram's observations are counted per bucket;
    a gauge of a count is read when they are applied (``sample``). (Once per turn of the
    loop was tried first: under load a turn finishes about one request, so that saved
    little.)

    A scrape sees its own process's updates complete (``ServiceMetrics.exposition``
    applies them first) and another worker's as of at most ``interval`` ago. A process
    killed outright (SIGKILL) loses at most its last ``interval``'s updates; a stopping
    one applies them (the app's lifespan).
    """

    def __init__(self, interval: float = PENDING_SECONDS) -> None:
        self.interval = interval
        # Loops in several threads may share one (tests run apps so): the lock guards the
        # pending updates, never a metric's own write.
        self._lock = threading.Lock()
        self._observed: dict[Any, list[float]] = {}  # histogram (child) -> observations
        self._added: dict[Any, float] = {}  # counter -> amount
        self._sampled: dict[Any, Callable[[], float]] = {}  # gauge -> its reading
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        self._layouts: dict[Any, tuple | None] = {}  # histogram -> _bucket_layout

    def update(
        self,
        observations: Iterable[tuple[Any, float]] = (),
        increments: Iterable[tuple[Any, float]] = (),
    ) -> None:
        """Observe each (histogram, value) and add each (counter, amount): together, once
        looking up the running loop (whose every look-up is a ``getpid`` system call)."""
        loop = asyncio._get_running_loop()
        if loop is None:
            for histogram, value in observations:
                histogram.observe(value)
            for counter, amount in increments:
                counter.inc(amount)
            return
        with self._lock:
            observed, added = self._observed, self._added
            for histogram, value in observations:
                values = observed.get(histogram)
                if values is None:
                    observed[histogram] = [value]
                else:
                    values.append(value)
            for counter, amount in increments:
                added[counter] = added.get(counter, 0) + amount
            if self._scheduled_on is not loop:
                self._schedule(loop)

    def observe(self, histogram: Any, value: float) -> None:
        self.update(((histogram, value),))

    def sample(self, gauge: Any, read: Callable[[], float]) -> None:
        """Set ``gauge`` to ``read()`` now and whenever the pending updates are applied.

        For a gauge of a count the request path changes twice a request (requests in
        flight, jobs queued): applied as it changes, only the last value of each interval
        would be written anyway. Every request ends with an update (its count and latency,
        ``observe_request``) after its count went down, and so with an application that
        reads the gauge after it: an idle process's gauge reads its idle value."""
        with self._lock:
            self._sampled[gauge] = read
        gauge.set(read())

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        # Another loop's pending call (one in another thread, or one that was closed before
        # it ran) applies whatever is pending too: applying twice is harmless.
        self._scheduled_on = loop
        loop.call_later(self.interval, self.apply)

    def apply(self) -> None:
        """Apply every pending update now."""
        with self._lock:
            observed, self._observed = self._observed, {}
            added, self._added = self._added, {}
            self._scheduled_on = None
        for histogram, values in observed.items():
            if histogram not in self._layouts:
                self._layouts[histogram] = _bucket_layout(histogram)
            _observe_all(histogram, self._layouts[histogram], values)
        for counter, amount in added.items():
            counter.inc(amount)
        for gauge, read in list(self._sampled.items()):
            gauge.set(read())


def _bucket_layout(histogram: Any) -> tuple[list[float], list[Any], Any] | None:
    """(upper bounds, bucket values, sum value) of a prometheus_client histogram; None
    where they are not found.

    prometheus_client keeps a histogram's buckets uncumulated, one value each, with its
    upper bounds (the last +Inf) in ``_upper_bounds``: an observation increments the sum
    and the first bucket whose bound is not below it. That layout is not public API:
    ``tests/service/test_metrics_batching.py`` compares the exposition of observations
    applied through it with that of the same observations made one by one.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        return None
    return bounds, buckets, total


def _observe_all(histogram: Any, layout: tuple | None, values: list[float]) -> None:
    """``histogram.observe`` for each of ``values``, as one increment of each bucket they
    fall in and one of the sum; one by one where the layout is unknown (None), and for a
    NaN, which falls in no bucket."""
    if layout is None:
        for value in values:
            histogram.observe(value)
        return
    bounds, buckets, total = layout
    counts = [0] * len(bounds)
    observed = []
    for value in values:
        if value != value:  # NaN
            histogram.observe(value)
            continue
        counts[bisect_left(bounds, value)] += 1
        observed.append(value)
    if not observed:
        return
    total.inc(math.fsum(observed))
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)


class _StoreSnapshot(Collector):
    """The job gauges: the last completed report of each model and the queue's counts,
    as the job store last said (``service.jobs.gauges`` keeps them fresh)."""

    def __init__(self) -> None:
        # Labels are bounded by the loaded models, the registered attacks and threat models
        # (plus "worst"), two norms, and at most QUSEC_ROBUSTNESS_MAX_EPSILONS radii each.
        self.robust_accuracy: dict[str, dict[tuple[str, str, str, str], float]] = {}
        self.report_time: dict[str, float] = {}
        self.report_source: dict[str, str] = {}  # model -> one of REPORT_SOURCES
        self.active_jobs: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        accuracy = GaugeMetricFamily(
            "qusec_robust_accuracy_ratio",
            "Robust accuracy in each model's last qualifying robustness check (until it has "
            "one, its published report), per attack, threat model, norm and radius; "
            'threat_model="worst" is the minimum over threat models, attack="worst" the '
            "minimum over every attack (the headline).",
            labels=["model", "attack", "threat_model", "norm", "epsilon"],
        )
        for model, series in list(self.robust_accuracy.items()):
            for labels, value in series.items():
                accuracy.add_metric([model, *labels], value)
        report_time = GaugeMetricFamily(
            "qusec_robustness_report_timestamp_seconds",
            "When the report each model's robust accuracy comes from finished (Unix time).",
            labels=["model"],
        )
        for model, finished_at in list(self.report_time.items()):
            report_time.add_metric([model], finished_at)
        source = GaugeMetricFamily(
            "qusec_robustness_report_source",
            "Where each model's robust accuracy comes from: 1 for its source, 0 for the other; "
            'source="check" is its last qualifying robustness check, source="published" the '
            "report published with its weights, shown until a qualifying check finishes.",
            labels=["model", "source"],
        )
        for model, current in list(self.report_source.items()):
            for name in REPORT_SOURCES:
                source.add_metric([model, name], 1 if name == current else 0)
        active = GaugeMetricFamily(
            "qusec_robustness_active_jobs",
            "Robustness-check jobs queued or running.",
            labels=["status"],
        )
        for status, count in list(self.active_jobs.items()):
            active.add_metric([status], count)
        yield from (accuracy, report_time, source, active)


# Every metric about robustness checks (their figures, their times, the job queue) starts
# so; those series are admin-only (``robustness_exposition``), never on the public scrape.
ROBUSTNESS_PREFIX = "qusec_robust"


class _Families(Collector):
    """The metric families of ``source`` that are (or are not) robustness series."""

    def __init__(self, source: CollectorRegistry, robustness: bool) -> None:
        self.source, self.robustness = source, robustness

    def collect(self) -> Iterator[Metric]:
        for family in self.source.collect():
            if family.name.startswith(ROBUSTNESS_PREFIX) == self.robustness:
                yield family


def _selection(source: CollectorRegistry, robustness: bool) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_Families(source, robustness))
    return registry


def _multiprocess_registry(snapshot: _StoreSnapshot) -> CollectorRegistry:
    """What a supervised worker's ``/metrics`` reports: every worker's samples."""
    directory = Path(os.environ[METRICS_DIR_ENV])
    (directory / _WORKER_PIDS).mkdir(exist_ok=True)
    (directory / _WORKER_PIDS / str(os.getpid())).touch()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    PlatformCollector(registry=registry)
    registry.register(snapshot)
    registry.register(WorkerGroupCollector(directory / _WORKER_PIDS))
    return registry


def forget_worker(directory: Path, pid: int) -> None:
    """A worker died: its live gauges go, its counters stay in the sums."""
    mark_process_dead(pid, str(directory))
    (directory / _WORKER_PIDS / str(pid)).unlink(missing_ok=True)


class WorkerGroupCollector(Collector):
    """``process_*`` for the worker processes together (Linux ``/proc``): CPU time,
    resident memory and open descriptors summed over the live workers."""

    def __init__(self, pids_dir: Path) -> None:
        self.pids_dir = pids_dir
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.page = os.sysconf("SC_PAGE_SIZE")

    def collect(self) -> Iterator[Metric]:
        cpu = rss = fds = workers = 0.0
        for entry in self.pids_dir.iterdir():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
                fds += len(os.listdir(f"/proc/{entry.name}/fd"))
            except (OSError, IndexError):
                continue  # exited since it was listed
            cpu += (int(stat[11]) + int(stat[12])) / self.ticks
            rss += int(stat[21]) * self.page
            workers += 1
        yield CounterMetricFamily(
            "process_cpu_seconds", "CPU time of the worker processes, summed.", value=cpu
        )
        yield GaugeMetricFamily(
            "process_resident_memory_bytes",
            "Resident memory of the worker processes, summed.",
            value=rss,
        )
        yield GaugeMetricFamily(
            "process_open_fds", "Open descriptors of the worker processes, summed.", value=fds
        )
        yield GaugeMetricFamily("qusec_workers", "Live serving processes.", value=workers)


def robust_accuracy_series(report: dict) -> dict[tuple[str, str, str, str], float]:
    """(attack, threat_model, norm, epsilon) -> robust accuracy, from a suite report.

    Sanity-radius and unbounded rows are left out, as in the report's own headline.
    """
    series: dict[tuple[str, str, str, str], float] = {}
    for row in report["results"]:
        if row["epsilon"] is None or row["sanity"]:
            continue
        key = (row["attack"], row["threat_model"], row["norm"], epsilon_label(row["epsilon"]))
        series[key] = min(series.get(key, 1.0), row["robust_accuracy"])
    for entry in report["worst_case_per_attack"]:
        key = (entry["attack"], "worst", entry["norm"], epsilon_label(entry["epsilon"]))
        series[key] = entry["robust_accuracy"]
    for entry in report["worst_case"]:
        key = ("worst", "worst", entry["norm"], epsilon_label(entry["epsilon"]))
        series[key] = entry["robust_accuracy"]
    return series


def epsilon_label(epsilon: float) -> str:
    return f"{epsilon:.6g}"
