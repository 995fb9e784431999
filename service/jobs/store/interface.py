"""The job store: the queue, leases, progress, stop requests and finished reports.

One interface, two engines: SQLite (``sqlite``, embedded, the default: one service
process owns the file) and PostgreSQL (``postgres``, shared by many service replicas
and job workers). Callers never see SQL. The queries below are written once, in the
subset both engines understand (``?`` placeholders; PostgreSQL's engine translates them);
each engine supplies its connections, its schema migrations, its clock and its claim.

Concurrency rules, the same on both engines:

- A claim takes the oldest queued job in one transaction (``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL, a write-locked transaction on SQLite), so two claimants never get one job.
- Each claim draws a fresh random ``lease`` token, counts an ``attempt`` and sets
  ``lease_expires_at`` by the database's clock. The holder renews it; every write by the
  holder (progress, renewal, finish) names its token and the job must still be
  ``running``, so a holder that lost its job (expired, re-queued, finished by someone else)
  can never overwrite what came after: the token is the fencing token.
- A lease that expires (its holder's machine died) is handled by whoever looks next
  (``expire_leases``): the job is queued again once, keeping its place, and interrupted
  the second time; a job whose cancel was requested is cancelled instead.
- Stop requests (cancel, shutdown) are a column the holder polls, so a cancel reaches the
  job wherever it runs.

A split check is a parent row with ``parts`` child rows (``parent_id``, ``part``), each
running some of the check's units. Only the parts are claimed; the parent is running
once one of them is, and finished by ``settle_split`` once all of them are. Listing,
counting and the queue's capacity see parents and unsplit jobs, never parts.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

log = logging.getLogger(__name__)

QUEUED, RUNNING = "queued", "running"
FINISHED = ("done", "failed", "cancelled", "timed_out", "interrupted")
STATUSES = (QUEUED, RUNNING, *FINISHED)
# A job whose holder vanished runs again once: a machine that dies is rarely the job's
# fault, and units are seeded, so the rerun gives the same rows. A job that takes its
# machine down twice is not tried a third time.
MAX_ATTEMPTS = 2
DEFAULT_LEASE_SECONDS = 30.0
LEASE_LOST_TWICE = "the job's worker stopped renewing its lease twice (its machine died?)"

_TOP = "parent_id IS NULL"  # a check as submitted, not a part of one
_SUMMARY_COLUMNS = (
    "id, status, model, spec, created_at, started_at, finished_at, progress, "
    "stop_request, error, headline, attempt, holder, parent_id, part, parts, "
    "qualifying, qualification"
)
# The newest check of each model that may set its gauges (service.jobs.qualifying).
_LATEST_QUALIFYING = (
    f"SELECT MAX(seq) FROM jobs WHERE status = 'done' AND qualifying = ? AND {_TOP} GROUP BY model"
)


class QueueFullError(Exception):
    """As many jobs are queued or running as the queue allows."""


# (parts, in plan order, with reports) -> (status, report, error) of the whole check.
Assemble = Callable[[list[dict]], tuple[str, dict | None, str | None]]


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, args: tuple = ()) -> Cursor: ...


class JobStore(ABC):
    """The queue and its jobs. Rows come back as dicts; JSON columns are decoded."""

    #: Shared by several processes that may run jobs (a crash of one says nothing about
    #: the jobs the others run). SQLite's store is owned by one service process.
    shared: bool = False
    #: SQL for "now", in seconds since the epoch, by the database's own clock.
    now_sql: str = ""
    #: Appended to a SELECT inside a transaction to lock the rows it reads.
    lock_sql: str = ""
    #: What the engine raises when its database cannot be used, and the setting naming it.
    errors: tuple[type[Exception], ...] = (OSError,)
    setting: str = ""

    @abstractmethod
    def initialise(self) -> None:
        """Create or upgrade the schema (the engine's migrations, each applied once)."""

    @abstractmethod
    def _connect(self) -> AbstractContextManager[Connection]:
        """A connection in autocommit mode: each statement is its own transaction."""

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Connection]:
        """A connection in one write transaction, committed at the end (rolled back on error)."""

    @abstractmethod
    def _oldest_queued(self, db: Connection) -> dict | None:
        """Inside a transaction: the oldest queued job's id, locked against other claimants."""

    @abstractmethod
    def _expired(self, db: Connection) -> list[dict]:
        """Inside a transaction: running jobs whose lease expired, locked for this caller."""

    def _serialise_submits(self, db: Connection) -> None:  # noqa: B027 (optional hook)
        """Inside a transaction: make concurrent submits count the queue one at a time."""

    def describe(self) -> str:
        return type(self).__name__

    # Submitting and reading.

    def submit(
        self,
        model: str,
        spec: dict,
        samples: bytes | None,
        capacity: int,
        parts: list[dict] | None = None,
    ) -> dict:
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
                f"SELECT COUNT(*) AS n FROM jobs WHERE status IN (?, ?) AND {_TOP}",
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

    def get(self, job_id: str, with_report: bool = True) -> dict | None:
        columns = f"{_SUMMARY_COLUMNS}, lease" + (", report" if with_report else "")
        with self._connect() as db:
            row = db.execute(f"SELECT {columns} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            job = _decode(row)
            if job["parts"]:
                job["progress"] = _sum_progress(self.parts(job_id, db=db))
        return job

    def parts(self, job_id: str, with_report: bool = False, db: Connection | None = None):
        """The parts of a split check, in plan order."""
        columns = _SUMMARY_COLUMNS + (", report" if with_report else "")
        query = f"SELECT {columns} FROM jobs WHERE parent_id = ? ORDER BY part"
        if db is not None:
            return [_decode(row) for row in db.execute(query, (job_id,)).fetchall()]
        with self._connect() as connection:
            return [_decode(row) for row in connection.execute(query, (job_id,)).fetchall()]

    def recent(self, limit: int, status: str | None = None, model: str | None = None) -> list[dict]:
        """Newest first, without reports; of one status and one model when given."""
        conditions, args = [_TOP], []
        if status:
            conditions.append("status = ?")
            args.append(status)
        if model:
            conditions.append("model = ?")
            args.append(model)
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {_SUMMARY_COLUMNS} FROM jobs WHERE {' AND '.join(conditions)} "
                "ORDER BY seq DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [job for row in rows if (job := _decode_or_skip(row)) is not None]

    def count_active(self) -> dict[str, int]:
        with self._connect() as db:
            rows = db.execute(
                f"SELECT status, COUNT(*) AS n FROM jobs WHERE status IN (?, ?) AND {_TOP} "
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

    def latest_done(self) -> dict[str, dict]:
        """The newest completed job of each model, with its report."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {_SUMMARY_COLUMNS}, report FROM jobs WHERE seq IN "
                f"(SELECT MAX(seq) FROM jobs WHERE status = 'done' AND {_TOP} GROUP BY model)"
            ).fetchall()
        decoded = (_decode_or_skip(row) for row in rows)
        return {job["model"]: job for job in decoded if job is not None}

    # Claims and leases.

    def claim_next(
        self, holder: str = "", lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> dict | None:
        """The oldest queued job, now running under a fresh lease; None if none is queued."""
        with self._transaction() as db:
            row = self._oldest_queued(db)
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status = ?, started_at = ?, lease = ?, holder = ?, "
                f"attempt = attempt + 1, lease_expires_at = {self.now_sql} + ? WHERE id = ?",
                (RUNNING, time.time(), secrets.token_hex(16), holder, lease_seconds, row["id"]),
            )
            db.execute(
                "UPDATE jobs SET status = ?, started_at = ? WHERE status = ? AND id = "
                "(SELECT parent_id FROM jobs WHERE id = ?)",
                (RUNNING, time.time(), QUEUED, row["id"]),
            )
        return self.get(row["id"], with_report=False)

    def renew(self, job_id: str, lease: str, lease_seconds: float) -> bool:
        """Extend the holder's lease; False if the job is no longer the holder's."""
        with self._connect() as db:
            cursor = db.execute(
                f"UPDATE jobs SET lease_expires_at = {self.now_sql} + ? "
                "WHERE id = ? AND lease = ? AND status = ?",
                (lease_seconds, job_id, lease, RUNNING),
            )
        return cursor.rowcount == 1

    def release(self, job_id: str, lease: str) -> bool:
        """Put a claimed job back in the queue, where it keeps its place; the attempt it
        was claimed for does not count."""
        with self._connect() as db:
            cursor = db.execute(
                "UPDATE jobs SET status = ?, started_at = NULL, lease = NULL, holder = NULL, "
                "lease_expires_at = NULL, progress = NULL, attempt = attempt - 1 "
                "WHERE id = ? AND lease = ? AND status = ?",
                (QUEUED, job_id, lease, RUNNING),
            )
        return cursor.rowcount == 1

    def expire_leases(self) -> list[tuple[str, str]]:
        """Handle every running job whose lease expired: (id, what it became)."""
        handled = []
        with self._transaction() as db:
            for row in self._expired(db):
                if row["stop_request"] == "cancel":
                    status, error = "cancelled", "cancelled; its worker stopped renewing its lease"
                elif row["attempt"] < MAX_ATTEMPTS:
                    db.execute(
                        "UPDATE jobs SET status = ?, started_at = NULL, lease = NULL, "
                        "holder = NULL, lease_expires_at = NULL, progress = NULL, "
                        "stop_request = NULL WHERE id = ?",
                        (QUEUED, row["id"]),
                    )
                    handled.append((row["id"], QUEUED))
                    continue
                else:
                    status, error = "interrupted", LEASE_LOST_TWICE
                db.execute(
                    "UPDATE jobs SET status = ?, finished_at = ?, error = ?, lease = NULL, "
                    "lease_expires_at = NULL WHERE id = ?",
                    (status, time.time(), error, row["id"]),
                )
                handled.append((row["id"], status))
        return handled

    # Stop requests.

    def request_stop(self, job_id: str, reason: str) -> str | None:
        """A queued job is cancelled at once; a running one is asked to stop (its holder
        polls the flag); a split check's parts likewise. Returns the job's status before,
        None if there is no such job."""
        with self._transaction() as db:
            row = db.execute("SELECT status, parts FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            # Parts before their parent: a claim locks a part, then its parent, and so
            # must everyone else, or the two could wait on each other.
            if row["parts"]:
                self._stop(db, "parent_id = ?", job_id, reason)
            self._stop(db, "id = ?", job_id, reason)
            return row["status"]

    def _stop(self, db: Connection, where: str, job_id: str, reason: str) -> None:
        # Each statement checks the status as it writes, so a job claimed meanwhile is
        # flagged rather than missed.
        if reason == "cancel":
            db.execute(
                f"UPDATE jobs SET status = 'cancelled', finished_at = ? "
                f"WHERE {where} AND status = ?",
                (time.time(), job_id, QUEUED),
            )
        # A cancel is never downgraded to a shutdown: the operator's word stands.
        db.execute(
            f"UPDATE jobs SET stop_request = COALESCE(stop_request, ?) "
            f"WHERE {where} AND status = ?",
            (reason, job_id, RUNNING),
        )

    def settle_split(self, job_id: str, assemble: Assemble) -> str | None:
        """Finish a split check once every part has finished, with what ``assemble`` makes
        of the parts (in plan order, with reports); returns its status if this call
        finished it. The parent's row is locked, so exactly one caller does."""
        with self._transaction() as db:
            parent = db.execute(
                f"SELECT status FROM jobs WHERE id = ?{self.lock_sql}", (job_id,)
            ).fetchone()
            if parent is None or parent["status"] not in (QUEUED, RUNNING):
                return None
            parts = self.parts(job_id, with_report=True, db=db)
            if not parts or any(part["status"] in (QUEUED, RUNNING) for part in parts):
                return None
            status, report, error = assemble(parts)
            db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, report = ?, headline = ?, "
                "error = ?, qualifying = ?, qualification = ? WHERE id = ?",
                (
                    status,
                    time.time(),
                    json.dumps(report) if report is not None else None,
                    json.dumps(report["worst_case"]) if report is not None else None,
                    error,
                    *_qualification_columns(report),
                    job_id,
                ),
            )
        return status

    def stop_request(self, job_id: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT stop_request FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row["stop_request"] if row is not None else None

    # Writes by the holder, fenced by its lease.

    def update_progress(self, job_id: str, lease: str, progress: dict) -> bool:
        with self._connect() as db:
            cursor = db.execute(
                "UPDATE jobs SET progress = ? WHERE id = ? AND lease = ? AND status = ?",
                (json.dumps(progress), job_id, lease, RUNNING),
            )
        return cursor.rowcount == 1

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
                "error = ?, qualifying = ?, qualification = ?, lease_expires_at = NULL "
                "WHERE id = ? AND lease = ? AND status = ?",
                (
                    status,
                    time.time(),
                    json.dumps(report) if report is not None else None,
                    headline,
                    error,
                    *_qualification_columns(report),
                    job_id,
                    lease,
                    RUNNING,
                ),
            )
        return cursor.rowcount == 1

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
            f"SELECT seq FROM jobs WHERE status IN ({finished}) AND {_TOP} "
            "ORDER BY seq DESC LIMIT ?"
        )
        latest_reports = (
            f"SELECT MAX(seq) FROM jobs WHERE status = 'done' AND {_TOP} GROUP BY model"
        )
        with self._transaction() as db:
            cursor = db.execute(
                f"DELETE FROM jobs WHERE status IN ({finished}) AND {_TOP} "
                f"AND seq NOT IN (SELECT seq FROM ({newest}) AS newest) "
                f"AND seq NOT IN ({latest_reports}) AND seq NOT IN ({_LATEST_QUALIFYING})",
                (*FINISHED, *FINISHED, keep, True),
            )
        return cursor.rowcount


def _sum_progress(parts: list[dict]) -> dict:
    """A split check's progress: its parts' batches added up; the unit of a running one."""
    done = total = 0
    current: dict = {"attack": None, "threat_model": None, "epsilon": None}
    for part in parts:
        progress = part["progress"] or {}
        done += progress.get("done_batches", 0)
        total += progress.get("total_batches", 0)
        if part["status"] == RUNNING and progress:
            current = {key: progress[key] for key in current}
    return {"done_batches": done, "total_batches": total, **current}


def _decode(row: Any) -> dict[str, Any]:
    job = dict(row)
    for key in ("spec", "progress", "headline", "report", "qualification"):
        if job.get(key) is not None:
            job[key] = json.loads(job[key])
    if job.get("qualifying") is not None:  # SQLite keeps booleans as 0 and 1
        job["qualifying"] = bool(job["qualifying"])
    return job


def _qualification_columns(report: dict | None) -> tuple[bool, str | None]:
    """(qualifying, qualification) of a finished check, from its report's judgement
    (``service.jobs.qualifying``): a check without one never qualifies."""
    judged = (report or {}).get("qualification")
    if judged is None:
        return False, None
    return bool(judged["qualifying"]), json.dumps(judged)


def _decode_or_skip(row: Any) -> dict[str, Any] | None:
    """A row whose JSON is damaged is left out (and logged), so it cannot break a list."""
    try:
        return _decode(row)
    except (ValueError, TypeError) as exc:
        log.warning("job %s: its stored record is unreadable (%s); left out", row["id"], exc)
        return None


__all__ = [
    "FINISHED",
    "QUEUED",
    "RUNNING",
    "STATUSES",
    "JobStore",
    "QueueFullError",
]
