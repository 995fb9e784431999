"""The published robustness reports of the served weights.

The repository publishes a report for each bundled model (``docs/results/``, made by
``python -m robustness evaluate`` on the model's evaluation set). Until a qualifying check
of a model finishes in the job store, the model's robustness gauges show its published
report (``seed_gauges``; ``service.jobs.gauges`` replaces it with the check), and the admin
API and the console show it beside the checks.

A report belongs to a served model only when it attacked the very weights served: its
``model.sha256`` equals the checkpoint's ``weights_sha256``. A report of other weights (a
retrained model, another model of the same name) is never used. Of several reports of the
same weights the broadest wins: the most threat models, then the most samples, then the
newest; so a narrow follow-up run (one attack, or 200 images) never hides the full
evaluation it followed.

The scan is bounded: at most ``MAX_FILES`` JSON files, each at most ``max_bytes``, regular
files only. A file that is too large, unreadable or not a report is skipped with a warning;
nothing here stops the service from starting.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.metrics import ServiceMetrics, robust_accuracy_series
from service.settings import BUNDLED_REPORTS_DIR

log = logging.getLogger(__name__)

# The largest published report (CIFAR-10, with its adversarial examples) is about 2.6 MB.
REPORT_MAX_BYTES = 16 << 20
MAX_FILES = 1000
PUBLISHED = "published"  # the gauges' source label for these reports
# What a summary repeats of the report's request: what the console's list of checks shows.
_REQUEST_KEYS = ("attacks", "threat_models", "epsilons", "l2_epsilons")


@dataclass(frozen=True)
class PublishedReport:
    """The published report that sets a served model's figures until a check does."""

    model: str  # the served model's name (the report may call it otherwise)
    file: str  # relative to the reports folder, "/"-separated: never an absolute path
    report: dict[str, Any]
    finished_at: float  # Unix time: started_at + seconds

    @property
    def weights_sha256(self) -> str:
        return self.report["model"]["sha256"]

    def summary(self, in_gauges: bool) -> dict[str, Any]:
        """What ``/admin/models`` shows of it: no path beyond the file's name in the folder."""
        request = self.report.get("request")
        request = request if isinstance(request, dict) else {}
        return {
            "file": self.file,
            "weights_sha256": self.weights_sha256,
            "weights_match": True,  # a report of other weights is never chosen
            "started_at": self.report["started_at"],
            "finished_at": _iso(self.finished_at),
            "status": self.report.get("status"),
            "samples": self.report.get("samples"),
            "worst_case": self.report["worst_case"],
            "request": {key: request.get(key) for key in _REQUEST_KEYS},
            "in_gauges": in_gauges,
        }


def find_published(
    folder: Path | None, weights: dict[str, str], max_bytes: int = REPORT_MAX_BYTES
) -> dict[str, PublishedReport]:
    """served model -> its published report, for the models ``weights`` (name -> sha256 of
    the served weights) names; a model without a report of its weights is absent."""
    if folder is None or not weights:
        return {}
    if not folder.is_dir():
        # The default is the source tree's docs/results: an installed package has none.
        level = logging.INFO if folder == BUNDLED_REPORTS_DIR else logging.WARNING
        log.log(level, "published reports: %s is not a folder; none is used", folder)
        return {}
    found: dict[str, list[PublishedReport]] = {}
    for path in _json_files(folder):
        file = path.relative_to(folder).as_posix()
        try:
            report, finished_at = _read_report(path, max_bytes)
        except ValueError as exc:
            log.warning("published report %s skipped: %s", file, exc)
            continue
        served = [name for name, sha256 in weights.items() if sha256 == report["model"]["sha256"]]
        if not served:
            _skipped_for_other_weights(file, report, weights)
            continue
        for name in served:
            found.setdefault(name, []).append(PublishedReport(name, file, report, finished_at))
    chosen = {name: _broadest(name, reports) for name, reports in found.items()}
    for name in weights:
        if name not in chosen:
            log.info("model %s: no published report of its weights", name)
    return chosen


def seed_gauges(metrics: ServiceMetrics, published: dict[str, PublishedReport]) -> None:
    """Each model's robustness series from its published report; called before the job
    store's qualifying checks are published, so that a check replaces them."""
    for name, chosen in published.items():
        metrics.publish_robustness_report(name, chosen.report, chosen.finished_at, PUBLISHED)


def _json_files(folder: Path) -> Iterator[Path]:
    """The ``.json`` files under ``folder``, in a stable order, at most ``MAX_FILES``;
    symbolic links to folders are not followed."""
    seen = 0
    walk = os.walk(folder, onerror=lambda exc: log.warning("published reports: %s", exc))
    for root, folders, files in walk:
        folders.sort()
        for name in sorted(files):
            if not name.endswith(".json"):
                continue
            if seen == MAX_FILES:
                log.warning("published reports: only the first %d JSON files are read", seen)
                return
            seen += 1
            yield Path(root) / name


def _read_report(path: Path, max_bytes: int) -> tuple[dict[str, Any], float]:
    """The report in ``path`` and when it finished; ``ValueError`` says why it is none."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > max_bytes:
            raise ValueError(f"{info.st_size} bytes, over the limit of {max_bytes}")
        with path.open("rb") as stream:
            data = stream.read(max_bytes + 1)  # it may have grown since
    except OSError as exc:
        raise ValueError(f"unreadable ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise ValueError(f"over the limit of {max_bytes} bytes")
    try:
        report = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    return report, _check_report(report)


def _check_report(report: Any) -> float:
    """When a robustness report finished; ``ValueError`` when ``report`` is none."""
    if not isinstance(report, dict) or not isinstance(report.get("model"), dict):
        raise ValueError("not a robustness report (no model)")
    sha256 = report["model"].get("sha256")
    if not isinstance(sha256, str) or len(sha256) != 64:
        raise ValueError("not a robustness report (no sha256 of the model's weights)")
    for key in ("results", "worst_case", "worst_case_per_attack"):
        if not isinstance(report.get(key), list):
            raise ValueError(f"not a robustness report (no {key})")
    try:
        started = datetime.fromisoformat(report["started_at"])
        seconds = float(report["seconds"])
        robust_accuracy_series(report)  # what the gauges will read of it
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a robustness report ({exc!r})") from None
    if started.tzinfo is None:  # the suite writes UTC; an older report may not say so
        started = started.replace(tzinfo=UTC)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a robustness report (seconds: {seconds})")
    return started.timestamp() + seconds


def _skipped_for_other_weights(file: str, report: dict[str, Any], weights: dict[str, str]) -> None:
    sha256, named = report["model"]["sha256"], report["model"].get("name")
    if named in weights:  # a report of the same name but other weights: stale, say so
        log.warning(
            "published report %s skipped: it attacked weights %s..., not the weights %s... "
            "served as %s",
            file,
            sha256[:12],
            weights[named][:12],
            named,
        )
    else:
        log.debug(
            "published report %s skipped: no served model has its weights (%s..., %s)",
            file,
            sha256[:12],
            named,
        )


def _broadest(name: str, reports: list[PublishedReport]) -> PublishedReport:
    ranked = sorted(reports, key=_coverage, reverse=True)
    chosen = ranked[0]
    log.info(
        "model %s: the published report %s (weights %s...) sets its robustness figures "
        "until a qualifying check finishes; %d narrower or older reports of the same "
        "weights passed over",
        name,
        chosen.file,
        chosen.weights_sha256[:12],
        len(ranked) - 1,
    )
    for other in ranked[1:]:
        log.debug(
            "model %s: published report %s passed over: %s covers more threat models, "
            "samples, or is newer",
            name,
            other.file,
            chosen.file,
        )
    return chosen


def _coverage(published: PublishedReport) -> tuple[int, int, float]:
    """(threat models with a bounded row, samples, finish time): larger is broader."""
    rows = [r for r in published.report["results"] if isinstance(r, dict)]
    bounded = [r for r in rows if r.get("epsilon") is not None and not r.get("sanity")]
    threat_models = {r.get("threat_model") for r in bounded}
    samples = published.report.get("samples")
    return len(threat_models), samples if isinstance(samples, int) else 0, published.finished_at


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
