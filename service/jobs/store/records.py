"""What the job store hands out: a job as one typed, frozen record, and the statuses.

Rows come out of either engine as mappings of column to value; ``JobRecord.from_row`` is
the one place their JSON columns are decoded. Callers read attributes, never columns, and
make changed copies with ``dataclasses.replace``. How the admin API shows a job is the
API's business (``service/api/job_responses.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

log = logging.getLogger(__name__)

QUEUED, RUNNING = "queued", "running"
FINISHED = ("done", "failed", "cancelled", "timed_out", "interrupted")
STATUSES = (QUEUED, RUNNING, *FINISHED)

# The columns stored as JSON text.
_JSON_COLUMNS = ("spec", "progress", "headline", "report", "qualification")


class QueueFullError(Exception):
    """As many jobs are queued or running as the queue allows."""


@dataclass(frozen=True)
class JobRecord:
    """One job (a check as submitted, or a part of a split check) as stored.

    ``lease`` is read only where a holder needs it (``get``, ``claim_next``) and
    ``report`` only when asked for; elsewhere they are None.
    """

    id: str
    status: str
    model: str
    spec: dict[str, Any]  # what the job runs (service.jobs.spec.JobSpec as a dict)
    created_at: float
    started_at: float | None
    finished_at: float | None
    progress: dict[str, Any] | None  # batches done of total, the unit being crafted
    stop_request: str | None  # 'cancel' or 'shutdown', polled by the holder
    error: str | None
    headline: list[dict[str, Any]] | None  # the report's worst case per radius
    attempt: int  # how many times it was claimed
    holder: str | None  # who claimed it last (host:pid)
    parent_id: str | None  # a part: the split check it belongs to
    part: int | None  # a part: its position in the check's plan
    parts: int | None  # a split check: how many parts it has
    # A finished check: whether it met the bar for the gauges, and the judgement
    # (service.jobs.qualifying); None before it finished and for checks from before the bar.
    qualifying: bool | None = None
    qualification: dict[str, Any] | None = None
    lease: str | None = None  # the current run's fencing token
    report: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def samples_owner(self) -> str:
        """The job whose uploaded samples this job reads: a part reads its parent's."""
        return self.parent_id or self.id

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> JobRecord:
        """A record from a row of the ``jobs`` table; ValueError if its JSON is damaged."""
        values = {name: row.get(name) for name in _FIELDS}
        for column in _JSON_COLUMNS:
            if values[column] is not None:
                values[column] = json.loads(values[column])
        if values["qualifying"] is not None:  # SQLite keeps booleans as 0 and 1
            values["qualifying"] = bool(values["qualifying"])
        return cls(**values)


_FIELDS = tuple(field.name for field in fields(JobRecord))


def record_or_skip(row: Mapping[str, Any]) -> JobRecord | None:
    """A row whose JSON is damaged is left out (and logged), so it cannot break a list."""
    try:
        return JobRecord.from_row(row)
    except (ValueError, TypeError) as exc:
        log.warning("job %s: its stored record is unreadable (%s); left out", row["id"], exc)
        return None


def qualification_columns(report: dict[str, Any] | None) -> tuple[bool, str | None]:
    """(qualifying, qualification) of a finished check, from its report's judgement
    (``service.jobs.qualifying``): a check without one never qualifies."""
    judged = (report or {}).get("qualification")
    if judged is None:
        return False, None
    return bool(judged["qualifying"]), json.dumps(judged)


def sum_progress(parts: list[JobRecord]) -> dict[str, Any]:
    """A split check's progress: its parts' batches added up; the unit of a running one."""
    done = total = 0
    current: dict[str, Any] = {"attack": None, "threat_model": None, "epsilon": None}
    for part in parts:
        progress = part.progress or {}
        done += progress.get("done_batches", 0)
        total += progress.get("total_batches", 0)
        if part.status == RUNNING and progress:
            current = {key: progress[key] for key in current}
    return {"done_batches": done, "total_batches": total, **current}


__all__ = [
    "FINISHED",
    "QUEUED",
    "RUNNING",
    "STATUSES",
    "JobRecord",
    "QueueFullError",
    "qualification_columns",
    "record_or_skip",
    "sum_progress",
]
