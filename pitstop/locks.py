"""One run per environment at a time: a PostgreSQL advisory lock on the platform's own database.

Why the database and not a Prefect concurrency limit: every run of an environment talks to that
database anyway, the lock works the same with the ephemeral Prefect API, a Prefect server or no
Prefect at all, and PostgreSQL releases it by itself when the holder dies (its session ends), so a
crashed run never leaves a stale lock behind. The holder's run id is visible in the lock
connection's ``application_name``, so a refused trigger can say who holds the environment.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from .connectors.postgres import Database
from .errors import RunLocked

APP_PREFIX = "pitstop-lock:"


def lock_key(environment: str) -> int:
    digest = hashlib.sha256(f"pitstop:{environment}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def holder_of(conn: Any, key: int) -> str | None:
    """The run id holding the advisory lock ``key`` (from its session's ``application_name``), or None."""
    row = conn.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted "
        "AND ((l.classid::bigint << 32) | l.objid::bigint) = %s LIMIT 1", [key]).fetchone()
    if not row or not row[0]:
        return None
    name = str(row[0])
    return name[len(APP_PREFIX):] if name.startswith(APP_PREFIX) else name


def current_holder(db: Database, environment: str) -> str | None:
    """The run id holding ``environment``'s lock now, or None when it is free (raises when the
    database cannot be reached)."""
    with db.connect(autocommit=True) as conn:
        return holder_of(conn, lock_key(environment))


class EnvironmentLock:
    def __init__(self, db: Database, environment: str, run_id: str):
        self.db = db
        self.environment = environment
        self.run_id = run_id
        self.key = lock_key(environment)
        self._conn: Any = None

    def acquire(self, wait_s: float = 0.0, poll_s: float = 1.0) -> None:
        """Take the lock or raise :class:`RunLocked` (after waiting up to ``wait_s`` when queueing)."""
        conn = self.db.connect(autocommit=True)
        conn.execute("SELECT set_config('application_name', %s, false)", [f"{APP_PREFIX}{self.run_id}"[:63]])
        deadline = time.monotonic() + wait_s
        while True:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", [self.key]).fetchone()
            if row and row[0]:
                self._conn = conn
                return
            if time.monotonic() >= deadline:
                holder = holder_of(conn, self.key)
                conn.close()
                raise RunLocked(f"environment {self.environment!r} is busy: run {holder or '(unknown)'} holds it; "
                                "try again when it has finished (or queue with --wait)")
            time.sleep(poll_s)

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", [self.key])
            finally:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> EnvironmentLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
