"""Claims, leases, stop requests and the holder's writes: the store's concurrency rules.

The same on both engines:

- A claim takes the oldest queued job in one transaction (``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL, a write-locked transaction on SQLite), so two claimants never get one job.
- Each claim draws a fresh random ``lease`` token, counts an ``attempt`` and sets
  ``lease_expires_at`` by the database's clock. The holder renews it; every write by the
  holder (progress, renewal, finish) names its token and the job must still be
  ``running``, so a holder that lost its job (expired, re-queued, finished by someone else)
  can never overwrite what came after: the token is the fencing token.
- A lease that expires (its holder's machine died) is handled by whoever looks next
  (``expire_leases``): the job is queued again once, keeping its place, and interrupted
  the second time; a job whose cancel was requested is cancelled instead. A holder that
  knows its run is lost through no fault of the job's (its store writes failed, its job
  process died of it) says so at once (``abandon``), with the same outcome.
- Stop requests (cancel, shutdown) are a column the holder polls, so a cancel reaches the
  job wherever it runs.

A split check is a parent row with ``parts`` child rows (``parent_id``, ``part``), each
running some of the check's units. Only the parts are claimed; the parent is running
once one of them is, and finished by ``settle_split`` once all of them are.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable

from service.jobs.store.base import Connection, StoreBase
from service.jobs.store.records import (
    FINISHED,
    QUEUED,
    RUNNING,
    JobRecord,
    qualification_columns,
)

# A job whose holder vanished runs again once: a machine that dies is rarely the job's
# fault, and units are seeded, so the rerun gives the same rows. A job that takes its
# machine down twice is not tried a third time.
MAX_ATTEMPTS = 2
DEFAULT_LEASE_SECONDS = 30.0
# A job interrupted after its second lost run says so, then why the last run was lost.
LOST_TWICE = "the job's run was lost twice"
LEASE_EXPIRED = (
    "its worker stopped renewing its lease (its machine died, or it could not write to "
    "the job store)"
)
LEASE_LOST_TWICE = f"{LOST_TWICE}: {LEASE_EXPIRED}"

# (parts, in plan order, with reports) -> (status, report, error) of the whole check.
Assemble = Callable[[list[JobRecord]], tuple[str, dict | None, str | None]]


class LeasedStore(StoreBase):
    """Claims and leases on top of an engine (see the module's rules)."""

    def claim_next(
        self, holder: str = "", lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> JobRecord | None:
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
        with self._transaction() as db:
            return [(row["id"], self._lost(db, row, LEASE_EXPIRED)) for row in self._expired(db)]

    def abandon(self, job_id: str, lease: str, why: str) -> str | None:
        """The holder gives up its run, lost through no fault of the job's (``why``): the
        job is queued again if it has a run left, else interrupted saying why; cancelled
        if a cancel was requested. Returns what it became; None if it was not the
        holder's any more (finished, expired and handled by someone else)."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT id, attempt, stop_request FROM jobs "
                f"WHERE id = ? AND lease = ? AND status = ?{self.lock_sql}",
                (job_id, lease, RUNNING),
            ).fetchone()
            return self._lost(db, row, why) if row is not None else None

    def _lost(self, db: Connection, row: dict, why: str) -> str:
        """Inside a transaction: settle a running job whose run was lost; its new status."""
        if row["stop_request"] == "cancel":
            status, error = "cancelled", f"cancelled; {why}"
        elif row["attempt"] < MAX_ATTEMPTS:
            db.execute(
                "UPDATE jobs SET status = ?, started_at = NULL, lease = NULL, "
                "holder = NULL, lease_expires_at = NULL, progress = NULL, "
                "stop_request = NULL WHERE id = ?",
                (QUEUED, row["id"]),
            )
            return QUEUED
        else:
            status, error = "interrupted", f"{LOST_TWICE}: {why}"
        db.execute(
            "UPDATE jobs SET status = ?, finished_at = ?, error = ?, lease = NULL, "
            "lease_expires_at = NULL WHERE id = ?",
            (status, time.time(), error, row["id"]),
        )
        return status

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
            if not parts or any(not part.finished for part in parts):
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
                    *qualification_columns(report),
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
                    *qualification_columns(report),
                    job_id,
                    lease,
                    RUNNING,
                ),
            )
        return cursor.rowcount == 1
