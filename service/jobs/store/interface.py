"""The job store: the queue, leases, progress, stop requests and finished reports.

One interface, two engines: SQLite (``sqlite``, embedded, the default: one service
process owns the file) and PostgreSQL (``postgres``, shared by many service replicas
and job workers). Callers never see SQL and get jobs as ``records.JobRecord``. The store
is built in layers: ``base`` (what an engine supplies, reading a job), ``leases`` (claims,
leases, stop requests, the holder's writes: the concurrency rules), and here, submitting,
listing and housekeeping. Listing, counting and the queue's capacity see checks as
submitted (parents and unsplit jobs), never the parts of a split check.
"""

from __future__ import annotations

import json
import time
import uuid

from service.jobs.store.base import SUMMARY_COLUMNS, TOP, Connection
from service.jobs.store.leases import (
    DEFAULT_LEASE_SECONDS,
    LEASE_LOST_TWICE,
    MAX_ATTEMPTS,
    Assemble,
    LeasedStore,
)
from service.jobs.store.records import (
    FINISHED,
    QUEUED,
    RUNNING,
    STATUSES,
    JobRecord,
    QueueFullError,
    record_or_skip,
)

# The newest check of each model that may set its gauges (service.jobs.qualifying).
_LATEST_QUALIFYING = (
    f"SELECT MAX(seq) FROM jobs WHERE status = 'done' AND qualifying = ? AND {TOP} GROUP BY model"
)


class JobStore(LeasedStore):
    """The queue and its jobs."""

    # Submitting and reading.

    def submit(
        self,
        model: str,
        spec: dict,
        samples: bytes | None,
        capacity: int,
        parts: list[dict] | None = None,
    ) -> JobRecord:
        """Queue a job unless ``capacity`` jobs are already queued or running; with
        ``parts`` (their specs), as a split check whose parts workers claim."""
        job_id = uuid.uuid4().hex
        insert = (
            "INSERT INTO jobs (id, status, model, spec, created_at, parent_id, part, parts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        with self._transaction() as db:
            self._serialise_submits(db)
            active = db.execute(
                f"SELECT COUNT(*) AS n FROM jobs WHERE status IN (?, ?) AND {TOP}",
                (QUEUED, RUNNING),
            ).fetchone()["n"]
            if active >= capacity:
                raise QueueFullError(f"{active} jobs queued or running (capacity {capacity})")
            count = len(parts) if parts else None
            now = time.time()
            db.execute(insert, (job_id, QUEUED, model, json.dumps(spec), now, None, None, count))
            for index, part in enumerate(parts or ()):
                row = (uuid.uuid4().hex, QUEUED, model, json.dumps(part), now, job_id, index, None)
                db.execute(insert, row)
            if samples is not None:
                db.execute("INSERT INTO job_samples (job_id, npz) VALUES (?, ?)", (job_id, samples))
        return self.get(job_id)  # type: ignore[return-value]

    def recent(
        self, limit: int, status: str | None = None, model: str | None = None
    ) -> list[JobRecord]:
        """Newest first, without reports; of one status and one model when given."""
        conditions, args = [TOP], []
        if status:
            conditions.append("status = ?")
            args.append(status)
        if model:
            conditions.append("model = ?")
            args.append(model)
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {SUMMARY_COLUMNS} FROM jobs WHERE {' AND '.join(conditions)} "
                "ORDER BY seq DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [job for row in rows if (job := record_or_skip(row)) is not None]

    def count_active(self) -> dict[str, int]:
        with self._connect() as db:
            rows = db.execute(
                f"SELECT status, COUNT(*) AS n FROM jobs WHERE status IN (?, ?) AND {TOP} "
                "GROUP BY status",
                (QUEUED, RUNNING),
            ).fetchall()
        return {QUEUED: 0, RUNNING: 0, **{row["status"]: row["n"] for row in rows}}

    def samples(self, job_id: str) -> bytes | None:
        with self._connect() as db:
            row = db.execute("SELECT npz FROM job_samples WHERE job_id = ?", (job_id,)).fetchone()
        return bytes(row["npz"]) if row is not None else None

    def latest_qualifying_ids(self) -> dict[str, str]:
        """model -> id of its newest qualifying check, the one its gauges show (cheap: no
        reports read)."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT model, id FROM jobs WHERE seq IN ({_LATEST_QUALIFYING})", (True,)
            ).fetchall()
        return {row["model"]: row["id"] for row in rows}

    def latest_done(self) -> dict[str, JobRecord]:
        """The newest completed job of each model, with its report."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {SUMMARY_COLUMNS}, report FROM jobs WHERE seq IN "
                f"(SELECT MAX(seq) FROM jobs WHERE status = 'done' AND {TOP} GROUP BY model)"
            ).fetchall()
        decoded = (record_or_skip(row) for row in rows)
        return {job.model: job for job in decoded if job is not None}

    # Housekeeping.

    def interrupt_running(self, error: str) -> list[str]:
        """At the startup of a store's only owner: a job still running was cut off by a crash."""
        with self._transaction() as db:
            rows = db.execute("SELECT id FROM jobs WHERE status = ?", (RUNNING,)).fetchall()
            db.execute(
                "UPDATE jobs SET status = 'interrupted', finished_at = ?, error = ?, "
                "lease_expires_at = NULL WHERE status = ?",
                (time.time(), error, RUNNING),
            )
        return [row["id"] for row in rows]

    def prune(self, keep: int) -> int:
        """Delete finished jobs beyond the newest ``keep``; returns how many went.

        The newest completed job of each model stays whatever its age (the console shows
        it), and so does its newest qualifying one: its report is what the robustness
        gauges show.
        """
        finished = ", ".join("?" * len(FINISHED))
        newest = (
            f"SELECT seq FROM jobs WHERE status IN ({finished}) AND {TOP} ORDER BY seq DESC LIMIT ?"
        )
        latest_reports = f"SELECT MAX(seq) FROM jobs WHERE status = 'done' AND {TOP} GROUP BY model"
        with self._transaction() as db:
            cursor = db.execute(
                f"DELETE FROM jobs WHERE status IN ({finished}) AND {TOP} "
                f"AND seq NOT IN (SELECT seq FROM ({newest}) AS newest) "
                f"AND seq NOT IN ({latest_reports}) AND seq NOT IN ({_LATEST_QUALIFYING})",
                (*FINISHED, *FINISHED, keep, True),
            )
        return cursor.rowcount


__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "FINISHED",
    "LEASE_LOST_TWICE",
    "MAX_ATTEMPTS",
    "QUEUED",
    "RUNNING",
    "STATUSES",
    "Assemble",
    "Connection",
    "JobRecord",
    "JobStore",
    "QueueFullError",
]
