"""Jobs in SQLite: the queue, progress, stop requests and finished reports.

The service process and the job process each open their own connections (one per
operation; opening one costs microseconds). WAL mode lets the service read while the
job process writes progress; ``synchronous=FULL`` makes every finished report durable
before the job counts as finished. Only the holder of a run's ``lease`` can write its
progress or finish it, so a job process orphaned by a crash cannot overwrite the
``interrupted`` mark the restarted service gave its job.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

QUEUED, RUNNING = "queued", "running"
FINISHED = ("done", "failed", "cancelled", "timed_out", "interrupted")
STATUSES = (QUEUED, RUNNING, *FINISHED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    model TEXT NOT NULL,
    spec TEXT NOT NULL,        -- JSON: what to run (service.jobs.spec.JobSpec)
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    progress TEXT,             -- JSON: batches done of total, the unit being crafted
    stop_request TEXT,         -- 'cancel' or 'shutdown', polled by the job process
    lease TEXT,                -- the current run's token
    error TEXT,
    headline TEXT,             -- JSON: the report's worst case per radius
    report TEXT                -- JSON: the whole report (also partial ones)
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS job_samples (
    job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    npz BLOB NOT NULL
);
"""
_SUMMARY_COLUMNS = (
    "id, status, model, spec, created_at, started_at, finished_at, progress, "
    "stop_request, error, headline"
)


class QueueFullError(Exception):
    """As many jobs are queued or running as the queue allows."""


class JobStore:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def initialise(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def submit(self, model: str, spec: dict, samples: bytes | None, capacity: int) -> dict:
        """Queue a job unless ``capacity`` jobs are already queued or running."""
        job_id = uuid.uuid4().hex
        with self._transaction() as db:
            (active,) = db.execute(
                "SELECT COUNT(*) FROM jobs WHERE status IN (?, ?)", (QUEUED, RUNNING)
            ).fetchone()
            if active >= capacity:
                raise QueueFullError(f"{active} jobs queued or running (capacity {capacity})")
            db.execute(
                "INSERT INTO jobs (id, status, model, spec, created_at) VALUES (?, ?, ?, ?, ?)",
                (job_id, QUEUED, model, json.dumps(spec), time.time()),
            )
            if samples is not None:
                db.execute("INSERT INTO job_samples VALUES (?, ?)", (job_id, samples))
        return self.get(job_id)  # type: ignore[return-value]

    def claim_next(self) -> dict | None:
        """The oldest queued job, now running under a fresh lease; None if none is queued."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE status = ? ORDER BY seq LIMIT 1", (QUEUED,)
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status = ?, started_at = ?, lease = ? WHERE id = ?",
                (RUNNING, time.time(), secrets.token_hex(16), row["id"]),
            )
        return self.get(row["id"], with_report=False)

    def release(self, job_id: str, lease: str) -> None:
        """Put a claimed job back in the queue, where it keeps its place."""
        with self._connect() as db:
            db.execute(
                "UPDATE jobs SET status = ?, started_at = NULL, lease = NULL "
                "WHERE id = ? AND lease = ? AND status = ?",
                (QUEUED, job_id, lease, RUNNING),
            )

    def get(self, job_id: str, with_report: bool = True) -> dict | None:
        columns = f"{_SUMMARY_COLUMNS}, lease" + (", report" if with_report else "")
        with self._connect() as db:
            row = db.execute(f"SELECT {columns} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _decode(row) if row is not None else None

    def recent(self, limit: int, status: str | None = None) -> list[dict]:
        """Newest first, without reports."""
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {_SUMMARY_COLUMNS} FROM jobs {where} ORDER BY seq DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [job for row in rows if (job := _decode_or_skip(row)) is not None]

    def count_active(self) -> dict[str, int]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT status, COUNT(*) FROM jobs WHERE status IN (?, ?) GROUP BY status",
                (QUEUED, RUNNING),
            ).fetchall()
        return {QUEUED: 0, RUNNING: 0, **{row[0]: row[1] for row in rows}}

    def samples(self, job_id: str) -> bytes | None:
        with self._connect() as db:
            row = db.execute("SELECT npz FROM job_samples WHERE job_id = ?", (job_id,)).fetchone()
        return bytes(row[0]) if row is not None else None

    def request_stop(self, job_id: str, reason: str) -> str | None:
        """A queued job is cancelled at once; a running one is asked to stop (the job process
        polls the flag). Returns the job's status before, None if there is no such job."""
        with self._transaction() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            if row["status"] == QUEUED and reason == "cancel":
                db.execute(
                    "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ?",
                    (time.time(), job_id),
                )
            elif row["status"] == RUNNING:
                # A cancel is never downgraded to a shutdown: the operator's word stands.
                db.execute(
                    "UPDATE jobs SET stop_request = COALESCE(stop_request, ?) WHERE id = ?",
                    (reason, job_id),
                )
            return row["status"]

    def stop_request(self, job_id: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT stop_request FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row[0] if row is not None else None

    def update_progress(self, job_id: str, lease: str, progress: dict) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE jobs SET progress = ? WHERE id = ? AND lease = ? AND status = ?",
                (json.dumps(progress), job_id, lease, RUNNING),
            )

    def finish(
        self,
        job_id: str,
        lease: str,
        status: str,
        report: dict | None = None,
        error: str | None = None,
    ) -> bool:
        """Finish a running job under its lease; False if it was no longer ours to finish."""
        if status not in FINISHED:
            raise ValueError(f"not a final status: {status!r}")
        headline = json.dumps(report["worst_case"]) if report is not None else None
        with self._connect() as db:
            cursor = db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, report = ?, headline = ?, "
                "error = ? WHERE id = ? AND lease = ? AND status = ?",
                (
                    status,
                    time.time(),
                    json.dumps(report) if report is not None else None,
                    headline,
                    error,
                    job_id,
                    lease,
                    RUNNING,
                ),
            )
        return cursor.rowcount == 1

    def interrupt_running(self, error: str) -> list[str]:
        """At startup: a job still marked running was cut off by a crash."""
        with self._transaction() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM jobs WHERE status = ?", (RUNNING,))]
            db.execute(
                "UPDATE jobs SET status = 'interrupted', finished_at = ?, error = ? "
                "WHERE status = ?",
                (time.time(), error, RUNNING),
            )
        return ids

    def prune(self, keep: int) -> int:
        """Delete finished jobs beyond the newest ``keep``; returns how many went.

        The newest completed job of each model stays whatever its age: its report is
        what the robustness gauges show.
        """
        finished = ", ".join("?" * len(FINISHED))
        newest = f"SELECT seq FROM jobs WHERE status IN ({finished}) ORDER BY seq DESC LIMIT ?"
        latest_reports = "SELECT MAX(seq) FROM jobs WHERE status = 'done' GROUP BY model"
        with self._transaction() as db:
            cursor = db.execute(
                f"DELETE FROM jobs WHERE status IN ({finished}) "
                f"AND seq NOT IN ({newest}) AND seq NOT IN ({latest_reports})",
                (*FINISHED, *FINISHED, keep),
            )
        return cursor.rowcount

    def latest_done(self) -> dict[str, dict]:
        """The newest completed job of each model, with its report."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {_SUMMARY_COLUMNS}, report FROM jobs WHERE seq IN "
                "(SELECT MAX(seq) FROM jobs WHERE status = 'done' GROUP BY model)"
            ).fetchall()
        decoded = (_decode_or_skip(row) for row in rows)
        return {job["model"]: job for job in decoded if job is not None}


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    job = dict(row)
    for key in ("spec", "progress", "headline", "report"):
        if job.get(key) is not None:
            job[key] = json.loads(job[key])
    return job


def _decode_or_skip(row: sqlite3.Row) -> dict[str, Any] | None:
    """A row whose JSON is damaged is left out (and logged), so it cannot break a list."""
    try:
        return _decode(row)
    except (ValueError, TypeError) as exc:
        log.warning("job %s: its stored record is unreadable (%s); left out", row["id"], exc)
        return None
