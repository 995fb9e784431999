"""Versioned schema migrations, the same bookkeeping for both engines.

Each engine lists its migrations (``MIGRATIONS[i]`` upgrades version ``i`` to ``i + 1``)
and applies them in ``initialise``; ``schema_migrations`` records what was applied.
"""

from __future__ import annotations

import time

from service.jobs.store.base import Connection


def migrate(db: Connection, migrations: list[list[str]]) -> int:
    """Apply the migrations not yet recorded in ``schema_migrations``; returns the version.

    ``migrations[i]`` upgrades version ``i`` to ``i + 1``. The caller holds a transaction
    (and on a shared server a lock), so replicas starting together migrate once.
    """
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
    )
    row = db.execute("SELECT MAX(version) AS v FROM schema_migrations").fetchone()
    current = row["v"] or 0
    if current > len(migrations):
        raise RuntimeError(
            f"the job store's schema is version {current}, newer than this code "
            f"({len(migrations)}): upgrade the service before using this store"
        )
    for version, steps in enumerate(migrations[current:], start=current + 1):
        for statement in steps:
            db.execute(statement)
        db.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
            (version, time.time()),
        )
    return len(migrations)


def statements(script: str) -> list[str]:
    """A migration script split into statements (no ``;`` inside them)."""
    return [part.strip() for part in script.split(";") if part.strip()]
