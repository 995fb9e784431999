"""The job store: one interface (``interface``, built on ``base`` and ``leases``), two
engines that each own their schema (``sqlite``, embedded, the default; ``postgres``, shared
by replicas and workers), and ``open_store``, which picks the engine a setting names.
Callers see no SQL; jobs come back as ``JobRecord`` (``records``)."""

from __future__ import annotations

from typing import Any

from service.jobs.store.interface import (
    FINISHED,
    QUEUED,
    RUNNING,
    STATUSES,
    Connection,
    JobRecord,
    JobStore,
    QueueFullError,
)


def open_store(url: str | None, sqlite_path: Any) -> JobStore:
    """The engine a setting names: a ``postgresql://`` URL, else SQLite at ``sqlite_path``."""
    if url:
        from service.jobs.store.postgres import PostgresJobStore  # psycopg only when used

        return PostgresJobStore(url)
    from service.jobs.store.sqlite import SqliteJobStore

    return SqliteJobStore(sqlite_path)


__all__ = [
    "FINISHED",
    "QUEUED",
    "RUNNING",
    "STATUSES",
    "Connection",
    "JobRecord",
    "JobStore",
    "QueueFullError",
    "open_store",
]
