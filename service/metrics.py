"""Every Prometheus metric the service exports, defined in this one module.

Each app gets its own ``CollectorRegistry`` (built in ``create_app``), so tests
can create many apps in one process. Names carry base units (``_seconds``,
``_bytes``), counters end in ``_total``, labels are low-cardinality (route
templates, stage names, reason codes, model names), and label values known up
front are created at zero so dashboards and alerts see them before they happen.
"""

from __future__ import annotations

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


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._define_http_metrics(self.registry)
        self._define_pipeline_metrics(self.registry)
        self._define_robustness_metrics(self.registry)
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason=reason)
        # The labelled children the hot path touches on every request, looked up once:
        # ``labels()`` takes a lock and builds a key each time.
        self._stages = {stage: self.stage_duration.labels(stage=stage) for stage in STAGES}
        self._request_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

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
        self.in_flight = Gauge(
            "qusec_in_flight_requests", "Inference requests being served.", registry=r
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
            "qusec_queue_depth", "Jobs waiting for the inference worker.", ["model"], registry=r
        )
        self.model_info = Gauge(
            "qusec_model_info",
            "Loaded models (value 1) with their defence and weights digest.",
            ["model", "dataset", "architecture", "quantizer", "levels", "weights_sha256", "device"],
            registry=r,
        )
        self.ready = Gauge("qusec_ready", "1 once models are loaded and warmed up.", registry=r)
        self.startup_duration = Gauge(
            "qusec_startup_duration_seconds",
            "Time from app start to ready (loading and warm-up).",
            registry=r,
        )

    def _define_robustness_metrics(self, r: CollectorRegistry) -> None:
        # Labels are bounded by the loaded models, the registered attacks and threat models
        # (plus "worst"), two norms, and at most QUSEC_ROBUSTNESS_MAX_EPSILONS radii each.
        self.robust_accuracy = Gauge(
            "qusec_robust_accuracy_ratio",
            "Robust accuracy in each model's last completed robustness check, per attack, "
            'threat model, norm and radius; threat_model="worst" is the minimum over threat '
            'models, attack="worst" the minimum over every attack (the headline).',
            ["model", "attack", "threat_model", "norm", "epsilon"],
            registry=r,
        )
        self.robustness_report_time = Gauge(
            "qusec_robustness_report_timestamp_seconds",
            "When each model's last completed robustness check finished (Unix time).",
            ["model"],
            registry=r,
        )
        self.robustness_jobs = Counter(
            "qusec_robustness_jobs_total",
            "Robustness-check jobs that reached a final status, by status.",
            ["status"],
            registry=r,
        )
        self.robustness_active_jobs = Gauge(
            "qusec_robustness_active_jobs",
            "Robustness-check jobs queued or running.",
            ["status"],
            registry=r,
        )
        self._robust_series: dict[str, set[tuple[str, ...]]] = {}

    def prepare_job_statuses(self, finished: tuple[str, ...], active: tuple[str, ...]) -> None:
        """Create the job-status series at zero; the job store, above this module, owns the
        statuses and tells them when the job system starts."""
        for status in finished:
            self.robustness_jobs.labels(status=status)
        for status in active:
            self.robustness_active_jobs.labels(status=status)

    def publish_robustness_report(self, model: str, report: dict, finished_at: float) -> None:
        """Replace ``model``'s robust-accuracy series with those of ``report``."""
        for labels in self._robust_series.pop(model, set()):
            self.robust_accuracy.remove(model, *labels)
        series = robust_accuracy_series(report)
        for labels, value in series.items():
            self.robust_accuracy.labels(model, *labels).set(value)
        self._robust_series[model] = set(series)
        self.robustness_report_time.labels(model=model).set(finished_at)

    def observe_stages(self, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            child = self._stages.get(stage)
            if child is not None:
                child.observe(seconds)

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
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


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
