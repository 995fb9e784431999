"""What every job store engine supplies, and how a job is read back.

An engine (``sqlite``, ``postgres``) gives connections (autocommit, or one write
transaction), its clock and row locks as SQL, the queries that pick the next job and the
expired leases, and its schema migrations. The queries of ``leases`` and ``interface`` are
written once on top of these, in the subset both engines understand (``?`` placeholders;
PostgreSQL's engine translates them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any, Protocol

from service.jobs.store.records import JobRecord, sum_progress

SUMMARY_COLUMNS = (
    "id, status, model, spec, created_at, started_at, finished_at, progress, "
    "stop_request, error, headline, attempt, holder, parent_id, part, parts, "
    "qualifying, qualification"
)
TOP = "parent_id IS NULL"  # a check as submitted, not a part of one


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, args: tuple = ()) -> Cursor: ...


class StoreBase(ABC):
    """What each engine supplies, and a job read back as a ``JobRecord``."""

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

    # Reading one job.

    def get(self, job_id: str, with_report: bool = True) -> JobRecord | None:
        columns = f"{SUMMARY_COLUMNS}, lease" + (", report" if with_report else "")
        with self._connect() as db:
            row = db.execute(f"SELECT {columns} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            job = JobRecord.from_row(row)
            if job.parts:
                job = replace(job, progress=sum_progress(self.parts(job_id, db=db)))
        return job

    def parts(
        self, job_id: str, with_report: bool = False, db: Connection | None = None
    ) -> list[JobRecord]:
        """The parts of a split check, in plan order."""
        columns = SUMMARY_COLUMNS + (", report" if with_report else "")
        query = f"SELECT {columns} FROM jobs WHERE parent_id = ? ORDER BY part"
        if db is not None:
            return [JobRecord.from_row(row) for row in db.execute(query, (job_id,)).fetchall()]
        with self._connect() as connection:
            rows = connection.execute(query, (job_id,)).fetchall()
        return [JobRecord.from_row(row) for row in rows]
