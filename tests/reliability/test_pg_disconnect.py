"""Database disconnects inside steps: ``pg_terminate_backend`` of pitstop's own backends while a
step works — a custom check's query, the backup's snapshot holder (it counts the manifest's rows),
``pg_dump``'s own session, and the retention purge (mid-batch or idle between batches).

Each termination is answered by one ``retry`` audit event (``what: pg.…``, SQLSTATE, bounded
jittered wait), a reconnect and the run completes. The purge stays exact: every batch commits its
progress with its DELETE, so the retry resumes the episode — ``deleted`` equals the rows that had
expired at the episode's cutoff, none is left, and no row that had not expired is gone. The backup
is redone in a fresh snapshot and its restore-verification (row counts against the manifest)
passes."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pitstop.backup.state import BackupState
from pitstop.model import Status
from pitstop.pgretry import MAX_WAIT
from pitstop.runner import execute
from tests.reliability.helpers import MONTHLY, events
from tests.reliability.results import full, record

SLOW_CHECK = """      - uses: check.sql_assert
        name: slow read-only assertion
        destructive: false
        with:
          description: one row after a pause
          sql: SELECT count(*) FROM (SELECT pg_sleep(0.3)) s
          expect_scalar: 1
"""
LIVE = {"events": "created_at > now() - interval '89 days'", "sessions": "expires_at > now() - interval '29 days'"}


@dataclass
class Target:
    """Terminate up to ``kills`` pitstop backends matching ``where`` while a ``uses`` step runs."""

    name: str
    uses: str | None
    where: str
    kills: int
    done: int = 0


class Terminator(threading.Thread):
    """Kills one backend at a time, and the next one only once the run recorded a ``pg.*`` retry for
    every earlier kill (so each injected fault maps to exactly one retry). A target whose step has
    finished is given up (its remaining kills count as not injected)."""

    def __init__(self, pg_socket: str, db: str, runs: Path, targets: list[Target]):
        super().__init__(daemon=True)
        self.pg_socket, self.db, self.runs, self.targets = pg_socket, db, runs, targets
        self.stop = threading.Event()

    def _purge_progressed(self) -> bool:
        with psycopg.connect(host=self.pg_socket, dbname=self.db, user="postgres", autocommit=True) as c:
            if c.execute("SELECT to_regclass('public.pitstop_cleanup_progress')").fetchone()[0] is None:
                return False
            row = c.execute("SELECT coalesce(max(batches), 0) FROM public.pitstop_cleanup_progress "
                            "WHERE status <> 'done'").fetchone()
            return bool(row and row[0] > 0)

    @property
    def killed(self) -> int:
        return sum(t.done for t in self.targets)

    def _state(self) -> tuple[set[str], set[str], int]:
        evs = [e for d in self.runs.glob("*/") for e in events(d)]
        running = {e["data"].get("uses") for e in evs if e["kind"] == "step.started"}
        finished = {e["data"].get("uses") for e in evs if e["kind"] == "step.finished"}
        retries = sum(e["kind"] == "retry" and str(e["data"].get("what", "")).startswith("pg.") for e in evs)
        return running - finished, finished, retries

    def run(self) -> None:
        last: tuple[Target, float] | None = None  # the latest kill and when it was delivered
        with psycopg.connect(host=self.pg_socket, dbname="postgres", user="postgres", autocommit=True) as conn:
            while not self.stop.is_set():
                time.sleep(0.004)
                running, finished, retries = self._state()
                pending = [t for t in self.targets if t.done < t.kills and t.uses not in finished]
                if retries < self.killed and last is not None and time.monotonic() - last[1] > 3.0:
                    # no retry followed: the session was already done with its work (e.g. the purge's
                    # connection idle after its last COMMIT) — not an injected fault; try again.
                    last[0].done -= 1
                    last = None
                    continue
                if not pending or retries < self.killed:
                    continue
                t = pending[0]
                if t.uses is not None and t.uses not in running:
                    continue
                if t.name == "purge" and not self._purge_progressed():
                    continue  # kill only once a batch is committed: the retry must *resume* the episode
                q = sql.SQL("SELECT pid FROM pg_stat_activity WHERE application_name = 'pitstop' AND datname = %s "
                            "AND pid <> pg_backend_pid() AND ({}) LIMIT 1").format(sql.SQL(t.where))  # type: ignore[arg-type]
                row = conn.execute(q, [self.db]).fetchone()
                if row and conn.execute("SELECT pg_terminate_backend(%s)", [row[0]]).fetchone()[0]:
                    t.done += 1
                    last = (t, time.monotonic())


def targets() -> list[Target]:
    n = 2 if full() else 1
    out = [Target("check", None, "state = 'active' AND strpos(query, 'pg_sleep(0.3)') > 0", n),
           # the snapshot holder: counting the manifest's rows, or idle in its transaction while pg_dump runs
           Target("backup-counts", "backup.postgres",
                  "state IN ('active', 'idle in transaction') AND query ~ '^SELECT count|pg_export_snapshot|"
                  "pg_database_size'", 1)]
    if full():  # pg_dump's own session (its catalog queries and COPYs)
        out.append(Target("pg_dump", "backup.postgres", "query ~ 'pg_catalog|^COPY ' AND query !~ 'relispartition'", 1))
    # the purge's session, mid-batch (DELETE, progress UPDATE) or idle between batches (after COMMIT)
    out.append(Target("purge", "cleanup.retention", "query ~ '^(DELETE|UPDATE|COMMIT|SELECT set_config)'",
                      3 if full() else 1))
    return out


def live_ids(pg_socket: str, db: str) -> dict[str, set[int]]:
    with psycopg.connect(host=pg_socket, dbname=db, user="postgres") as conn:
        return {t: {r[0] for r in conn.execute(sql.SQL("SELECT id FROM {} WHERE " + w).format(  # type: ignore[arg-type]
            sql.Identifier(t)))} for t, w in LIVE.items()}


def test_disconnects_are_retried_and_the_purge_stays_exact(make_env: Any, tmp_path: Path, pg_socket: str,
                                                            seeded_db: str) -> None:
    def mutate(cfg: dict[str, Any]) -> None:
        # small batches with a pause: many batches, so terminations land mid-batch and between batches
        cfg["cleanup"] = {"profile": "steady", "profiles": {"steady": {
            "initial_batch": 25, "min_batch": 25, "max_batch": 25, "pause_ms": 20}}}

    env = make_env(mutate)
    runbook = tmp_path / "monthly-slowcheck.yaml"
    disk = "      - uses: check.disk_free\n"
    runbook.write_text(MONTHLY.replace(disk, SLOW_CHECK + disk, 1))
    before = live_ids(pg_socket, seeded_db)
    plan = targets()
    killer = Terminator(pg_socket, seeded_db, tmp_path / "state" / "runs", plan)
    killer.start()
    try:
        result = execute(str(env), str(runbook))
    finally:
        killer.stop.set()
        killer.join(10)
    evs = events(result.run_dir)
    retries = [e["data"] for e in evs if e["kind"] == "retry" and e["data"]["what"].startswith("pg.")]
    injected = killer.killed
    record("pg_disconnect", transient_faults=injected, recovered=min(injected, len(retries))
           if result.status == Status.SUCCEEDED else 0)
    assert result.status == Status.SUCCEEDED, result.report().get("failure")
    assert {t.name: t.done for t in plan} == {t.name: t.kills for t in plan}, "a termination was not delivered"
    assert len(retries) == injected, retries
    assert all(r["sqlstate"] in ("57P01", None) and r["wait_s"] <= MAX_WAIT for r in retries), retries
    whats = {r["what"] for r in retries}
    assert {"pg.check.sql_assert", "pg.backup"} <= whats and any(w.startswith("pg.purge ") for w in whats), whats
    # the purge: exact, resumed within the run, nothing outside the rule touched
    purged = {e["data"]["table"]: e["data"] for e in evs if e["kind"] == "cleanup.purged"}
    assert any(e["kind"] == "cleanup.resumed" for e in evs)
    after = live_ids(pg_socket, seeded_db)
    with psycopg.connect(host=pg_socket, dbname=seeded_db, user="postgres") as conn:
        for table, column in (("events", "created_at"), ("sessions", "expires_at")):
            p = purged[f"public.{table}"]
            assert p["deleted"] == p["expired"] == p["deleted_this_run"] > 0, p
            assert p["rows_after"] == p["rows_before"] - p["deleted"], p
            left = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} < %s").format(
                sql.Identifier(table), sql.Identifier(column)), [p["cutoff"]]).fetchone()
            assert left is not None and left[0] == 0, (table, left)
    assert before == after, "a row that had not expired was deleted"
    # the backup redone in a fresh snapshot: the restore's row counts match the manifest
    assert sum(e["kind"] == "backup.created" for e in evs) == 1
    assert any(e["kind"] == "step.finished" and e["data"]["uses"] == "backup.verify"
               and e["data"]["status"] == "succeeded" for e in evs)


def test_policy_retries_disconnects_and_never_permanent_errors(make_env: Any, pg_socket: str,
                                                                seeded_db: str) -> None:
    """The classification against the real server: a terminated backend is retried with a new
    connection; undefined table, syntax error, insufficient privilege and an unknown role (auth)
    are raised after exactly one attempt."""
    import pytest

    from pitstop.config import load_config
    from pitstop.connectors.postgres import Database
    from pitstop.errors import ConnectorError
    from pitstop.pgretry import call

    db = Database(load_config(str(make_env())))
    with psycopg.connect(host=pg_socket, dbname=seeded_db, user="postgres", autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS rel_nopriv")
        admin.execute("CREATE ROLE rel_nopriv LOGIN")
    pids: list[int] = []

    def killed_once() -> int:
        with db.connect(autocommit=True) as conn:
            pids.append(conn.info.backend_pid)
            if len(pids) == 1:
                conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
            return int(conn.execute("SELECT 1").fetchone()[0])  # type: ignore[index]

    assert call(None, "probe", killed_once) == 1 and len(pids) == 2 and pids[0] != pids[1]

    def one(stmt: str, user: str = "postgres") -> Any:
        def attempt() -> None:
            tries.append(1)
            with psycopg.connect(host=pg_socket, dbname=seeded_db, user=user) as conn:
                conn.execute(stmt)  # type: ignore[arg-type]
        tries: list[int] = []
        return attempt, tries

    for stmt, user, sqlstate in (("SELECT * FROM no_such_table", "postgres", "42P01"),
                                 ("SELEC 1", "postgres", "42601"),
                                 ("SELECT * FROM orders", "rel_nopriv", "42501")):
        fn, tries = one(stmt, user)
        with pytest.raises(psycopg.Error) as err:
            call(None, "probe", fn)
        assert err.value.sqlstate == sqlstate and len(tries) == 1, (stmt, tries)
    connects: list[int] = []

    def as_unknown_role() -> None:
        connects.append(1)
        db.cfg = db.cfg.model_copy(update={"user": "no_such_role"})
        db.connect()

    with pytest.raises(ConnectorError, match="no_such_role") as auth:
        call(None, "probe", as_unknown_role)
    assert len(connects) == 1 and type(auth.value) is ConnectorError
    with psycopg.connect(host=pg_socket, dbname=seeded_db, user="postgres", autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS rel_nopriv")
    record("pg_policy")  # a classification test: its one termination is not counted as a run fault


def test_verification_is_redone_when_pg_restore_loses_its_session(make_env: Any, pg_socket: str,
                                                                   seeded_db: str) -> None:
    """``pg_terminate_backend`` of pg_restore's session while it loads a table into the scratch database:
    one ``pg.verify`` retry, the verification redone in a new scratch database and passed, none left over."""
    from pitstop.backup.steps import BackupParams, VerifyParams, backup_postgres, backup_verify
    from pitstop.config import load_config
    from pitstop.context import RunContext, RunOptions
    from pitstop.runbook import load_runbook

    with psycopg.connect(host=pg_socket, dbname=seeded_db, user="postgres") as conn:  # a COPY long enough to hit
        conn.execute("CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 400000) g")
    cfg = load_config(str(make_env()))
    ctx = RunContext.create(cfg, load_runbook("monthly", cfg), RunOptions())
    backup_postgres(ctx, BackupParams())
    scratch = "SELECT datname FROM pg_database WHERE datname LIKE 'pitstop_verify_%'"
    with psycopg.connect(host=pg_socket, dbname="postgres", user="postgres") as c:
        before = set(c.execute(scratch).fetchall())  # runs killed mid-verify by earlier tests leave theirs
    killed: list[int] = []
    stop = threading.Event()

    def kill_restore_copy() -> None:
        with psycopg.connect(host=pg_socket, dbname="postgres", user="postgres", autocommit=True) as c:
            while not stop.is_set() and not killed:
                row = c.execute("SELECT pid FROM pg_stat_activity WHERE datname LIKE 'pitstop_verify_%%' "
                                "AND state = 'active' AND query ~ '^COPY public.bulk'").fetchone()
                if row and c.execute("SELECT pg_terminate_backend(%s)", [row[0]]).fetchone()[0]:
                    killed.append(int(row[0]))
                time.sleep(0.002)

    killer = threading.Thread(target=kill_restore_copy, daemon=True)
    killer.start()
    try:
        backup_verify(ctx, VerifyParams())
    finally:
        stop.set()
        killer.join(5)
    retries = [e["data"] for e in ctx.audit.events if e["kind"] == "retry"]
    record("pg_disconnect_verify", transient_faults=len(killed),
           recovered=len(killed) if ctx.state.of(BackupState).backup.get("verified") else 0)
    assert len(killed) == 1, "pg_restore's COPY was never seen"
    assert [r["what"] for r in retries] == ["pg.verify"], retries
    assert ctx.state.of(BackupState).backup["verified"] is True
    verified = next(e["data"] for e in ctx.audit.events if e["kind"] == "backup.verified")
    assert verified["row_counts"]["public.bulk"] == 400000 and verified["differences"] == {}
    with psycopg.connect(host=pg_socket, dbname="postgres", user="postgres") as c:
        left = set(c.execute(scratch).fetchall()) - before
    assert left == set(), left
