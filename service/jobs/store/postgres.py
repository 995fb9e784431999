"""The shared engine: jobs on a PostgreSQL server, for many service replicas and workers.

psycopg 3, one short connection per operation (no pool: operations are a few a second
per process, and a connection that outlives a server restart is one thing less to heal).
The shared queries use ``?`` placeholders; they become psycopg's ``%s`` here. A claim
locks the row it takes with ``FOR UPDATE SKIP LOCKED``: concurrent claimants skip it
and take the next, never wait on each other and never get the same job. Schema upgrades
and submits (which count the queue) take transaction-scoped advisory locks, so replicas
that start or submit together do so one at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from service.jobs.store.interface import QUEUED, RUNNING, Connection, JobStore
from service.jobs.store.migrations import migrate, statements

# Arbitrary constants naming this store's advisory locks.
_MIGRATION_LOCK = 0x51_53_45_43_01
_SUBMIT_LOCK = 0x51_53_45_43_02
CONNECT_TIMEOUT_SECONDS = 10

MIGRATIONS = [
    statements(
        """
        CREATE TABLE jobs (
            seq BIGSERIAL PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL,
            model TEXT NOT NULL,
            spec TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            started_at DOUBLE PRECISION,
            finished_at DOUBLE PRECISION,
            progress TEXT,
            stop_request TEXT,
            lease TEXT,
            error TEXT,
            headline TEXT,
            report TEXT,
            attempt INTEGER NOT NULL DEFAULT 0,
            holder TEXT,
            lease_expires_at DOUBLE PRECISION,
            parent_id TEXT REFERENCES jobs (id) ON DELETE CASCADE,
            part INTEGER,
            parts INTEGER
        );
        CREATE INDEX jobs_by_status ON jobs (status, seq);
        CREATE INDEX jobs_by_parent ON jobs (parent_id, part);
        CREATE TABLE job_samples (
            job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
            npz BYTEA NOT NULL
        )
        """
    ),
    # Whether a finished check met the bar for the gauges, and why not
    # (service.jobs.qualifying); NULL for checks from before.
    statements(
        """
        ALTER TABLE jobs ADD COLUMN qualifying BOOLEAN;
        ALTER TABLE jobs ADD COLUMN qualification TEXT
        """
    ),
]


class _Translating:
    """A psycopg connection that takes the shared queries' ``?`` placeholders."""

    def __init__(self, connection: psycopg.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, args: tuple = ()) -> Any:
        return self._connection.execute(sql.replace("?", "%s"), args)  # type: ignore[arg-type]


class PostgresJobStore(JobStore):
    shared = True
    errors = (psycopg.Error, OSError)
    setting = "QUSEC_JOBS_URL"
    lock_sql = " FOR UPDATE"
    now_sql = "EXTRACT(EPOCH FROM clock_timestamp())::DOUBLE PRECISION"

    def __init__(self, url: str) -> None:
        self.url = url

    def describe(self) -> str:
        info = psycopg.conninfo.conninfo_to_dict(self.url)
        return f"PostgreSQL {info.get('host', 'localhost')}:{info.get('port', 5432)}"

    def initialise(self) -> None:
        with self._transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            migrate(db, MIGRATIONS)

    @contextmanager
    def _open(self, autocommit: bool) -> Iterator[psycopg.Connection]:
        connection = psycopg.connect(
            self.url,
            autocommit=autocommit,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
        )
        try:
            yield connection
        finally:
            connection.close()

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        with self._open(autocommit=True) as connection:
            yield _Translating(connection)

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._open(autocommit=False) as connection, connection.transaction():
            yield _Translating(connection)

    def _serialise_submits(self, db: Connection) -> None:
        db.execute("SELECT pg_advisory_xact_lock(?)", (_SUBMIT_LOCK,))

    def _oldest_queued(self, db: Connection) -> dict | None:
        return db.execute(
            "SELECT id FROM jobs WHERE status = ? AND parts IS NULL "
            "ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED",
            (QUEUED,),
        ).fetchone()

    def _expired(self, db: Connection) -> list[dict]:
        return db.execute(
            "SELECT id, attempt, stop_request FROM jobs "
            f"WHERE status = ? AND lease_expires_at < {self.now_sql} "
            "ORDER BY seq FOR UPDATE SKIP LOCKED",
            (RUNNING,),
        ).fetchall()
