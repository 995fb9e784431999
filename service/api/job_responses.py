"""A job as the admin API shows it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from service.jobs.radii import add_labels, label_table
from service.jobs.store import QUEUED, RUNNING, JobRecord


def public_job(job: JobRecord, with_report: bool) -> dict[str, Any]:
    """A job as the admin API shows it (the JSON of ``schemas.RobustnessJob``)."""
    spec = job.spec
    body = {
        "id": job.id,
        "status": job.status,
        "model": job.model,
        "samples": "uploaded" if spec["eval_set"] is None else Path(spec["eval_set"]).name,
        "request": spec["request"],
        "time_budget_seconds": spec["time_budget_seconds"],
        "estimated_cost": spec.get("cost"),
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "progress": _progress(job),
        "cancel_requested": job.stop_request == "cancel",
        "attempt": job.attempt,
        "parts": job.parts,
        "error": job.error,
        "worst_case": job.headline,
    }
    body["qualifying"], body["qualification"] = _qualification(job)
    if spec.get("radii_as_given") is not None:
        body["radii_as_given"] = spec["radii_as_given"]
    if with_report:
        body["report"] = job.report
    add_labels([body["progress"], body["worst_case"], body.get("report")], _labels(spec))
    return body


def _qualification(job: JobRecord) -> tuple[bool | None, dict[str, Any] | None]:
    """Whether the check set (or, unfinished, may set) its model's robustness gauges, and
    why not: the judgement stored when it finished, else the one made of its request."""
    judged = job.qualification
    if judged is not None:
        return judged["qualifying"], {"reasons": judged["reasons"], "bar": judged["bar"]}
    planned = job.spec.get("qualification")
    if job.status in (QUEUED, RUNNING):
        return None, planned
    if planned is None:
        return False, {"reasons": ["it was submitted before checks were held to a bar"]}
    ended = f"the check ended {job.status} without a report"
    return False, {"reasons": [*planned["reasons"], ended], "bar": planned["bar"]}


def _labels(spec: dict[str, Any]) -> dict[str, str]:
    return label_table(spec["request"], spec.get("radii_as_given"))


def _progress(job: JobRecord) -> dict[str, Any]:
    progress = dict(job.progress or {"done_batches": 0, "total_batches": 0})
    total = progress["total_batches"]
    progress["fraction"] = round(progress["done_batches"] / total, 4) if total else 0.0
    return progress


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
