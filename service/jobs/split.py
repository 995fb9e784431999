"""Splitting one check across workers, and putting its report back together.

With ``QUSEC_ROBUSTNESS_SPLIT_UNITS``, a check whose plan has several units (attack,
threat model, radius: ``robustness.plan``) is stored as a parent with one
part per unit; any worker claims any part. Each part runs the whole suite's set-up (the
same samples, clean predictions and gradient probes) and only its unit
(``run_suite(only_units=...)``); units seed themselves, so a part's rows are the rows one
worker running the whole plan would have produced. When the last part finishes, its
worker (or the replica that noticed its lease expire, or the cancel) assembles the
report with ``robustness.merge.assemble_parts``.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from models.checkpoint import load_checkpoint
from robustness.plan import Subject, plan_units
from robustness.request import SuiteRequest
from service.jobs.qualifying import qualified
from service.jobs.spec import JobSpec
from service.jobs.store import JobRecord, JobStore

log = logging.getLogger(__name__)

# When a part did not finish done, the check takes the first of these its parts reached.
_PRECEDENCE = ("failed", "cancelled", "timed_out", "interrupted")


def plan_parts(spec: JobSpec, dataset: str, model) -> list[JobSpec] | None:
    """One spec per unit of the check's plan; None when there is only one unit.

    ``model`` is the served model (the plan depends on whether it has a quantizer).
    """
    request = SuiteRequest.from_dict(spec.request)
    target = Subject(
        spec.model,
        dataset,
        spec.weights_sha256,
        model,
        input_shape=tuple(spec.input_shape),
        classes=spec.classes,
    )
    surrogate = None
    if spec.surrogate is not None:
        surrogate = Subject.from_checkpoint(load_checkpoint(spec.surrogate))
    units, _ = plan_units(request, request.resolved_attacks(), target, surrogate)
    if len(units) < 2:
        return None
    return [replace(spec, units=(index,)) for index in range(len(units))]


def assemble(parts: list[JobRecord]) -> tuple[str, dict | None, str | None]:
    """(status, report, error) of a split check from its finished parts, in plan order."""
    # Only a replica that settles a split check needs the merge rules; the serving process
    # otherwise never loads them (tests/service/test_operations.py).
    from robustness.merge import assemble_parts

    statuses = [part.status for part in parts]
    reports = [part.report for part in parts if part.report is not None]
    if all(status == "done" for status in statuses):
        return "done", assemble_parts(reports), None
    status = next(s for s in _PRECEDENCE if s in statuses)
    first = next(part for part in parts if part.status == status)
    error = f"{statuses.count('done')} of {len(parts)} parts done; a {status} part: {first.error}"
    if status == "failed" or not reports:
        return status, None, error
    return status, assemble_parts(reports), error


def settle_parent_of(store: JobStore, job_id: str) -> str | None:
    """If ``job_id`` is the last part of a split check to finish, finish the check."""
    job = store.get(job_id, with_report=False)
    if job is None or job.parent_id is None:
        return None
    return settle(store, job.parent_id)


def settle(store: JobStore, parent_id: str) -> str | None:
    parent = store.get(parent_id, with_report=False)
    qualification = None if parent is None else parent.spec.get("qualification")

    def assemble_and_judge(parts: list[JobRecord]) -> tuple[str, dict | None, str | None]:
        status, report, error = assemble(parts)
        return status, qualified(qualification, status, report), error

    try:
        status = store.settle_split(parent_id, assemble_and_judge)
    except ValueError as exc:  # MergeError: parts that disagree are a bug, not the user's
        log.error("job %s: its parts cannot be assembled: %s", parent_id, exc)
        status = store.settle_split(parent_id, lambda _: ("failed", None, "parts disagree"))
    if status is not None:
        log.info("job %s %s (assembled from its parts)", parent_id, status)
    return status
