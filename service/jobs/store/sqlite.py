"""The embedded engine: jobs in one SQLite file, owned by one service process.

The service process and its job process each open their own connections (one per
operation; opening one costs microseconds). WAL mode lets the service read while the
job process writes progress; ``synchronous=FULL`` makes every finished report durable
before the job counts as finished. Write transactions start with ``BEGIN IMMEDIATE``,
which takes the file's write lock at once: a claim's read and update cannot interleave
with another's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.jobs.store.interface import QUEUED, RUNNING, Connection, JobStore
from service.jobs.store.migrations import migrate, statements

# Version 1 is the schema from before migrations were versioned (``IF NOT EXISTS``, so a
# database of that age is adopted as it is); version 2 adds leases (attempt, holder,
# expiry) and split checks (parent, part, parts); version 3 qualifying checks.
MIGRATIONS = [
    statements(
        """
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
            stop_request TEXT,         -- 'cancel' or 'shutdown', polled by the holder
            lease TEXT,                -- the current run's token
            error TEXT,
            headline TEXT,             -- JSON: the report's worst case per radius
            report TEXT                -- JSON: the whole report (also partial ones)
        );
        CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
        CREATE TABLE IF NOT EXISTS job_samples (
            job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
            npz BLOB NOT NULL
        )
        """
    ),
    statements(
        """
        ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE jobs ADD COLUMN holder TEXT;
        ALTER TABLE jobs ADD COLUMN lease_expires_at REAL;
        ALTER TABLE jobs ADD COLUMN parent_id TEXT REFERENCES jobs (id) ON DELETE CASCADE;
        ALTER TABLE jobs ADD COLUMN part INTEGER;
        ALTER TABLE jobs ADD COLUMN parts INTEGER;
        CREATE INDEX jobs_by_parent ON jobs (parent_id, part)
        """
    ),
    # Version 3: whether a finished check met the bar for the gauges, and why not
    # (service.jobs.qualifying); NULL for checks from before.
    statements(
        """
        ALTER TABLE jobs ADD COLUMN qualifying BOOLEAN;
        ALTER TABLE jobs ADD COLUMN qualification TEXT
        """
    ),
]


def _dict_row(cursor: sqlite3.Cursor, row: tuple) -> dict:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


class SqliteJobStore(JobStore):
    shared = False
    errors = (sqlite3.Error, OSError)
    setting = "QUSEC_ROBUSTNESS_DB"
    lock_sql = ""
    now_sql = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        return f"SQLite {self.path}"

    def initialise(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
        with self._transaction() as db:
            migrate(db, MIGRATIONS)

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.row_factory = _dict_row
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            yield db  # type: ignore[misc]
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _oldest_queued(self, db: Connection) -> dict | None:
        return db.execute(
            "SELECT id FROM jobs WHERE status = ? AND parts IS NULL ORDER BY seq LIMIT 1",
            (QUEUED,),
        ).fetchone()

    def _expired(self, db: Connection) -> list[dict]:
        return db.execute(
            "SELECT id, attempt, stop_request FROM jobs "
            f"WHERE status = ? AND lease_expires_at < {self.now_sql} ORDER BY seq",
            (RUNNING,),
        ).fetchall()
