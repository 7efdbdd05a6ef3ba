"""Partitions entirely older than the cutoff are detached and dropped (archived first with
``archive: true``) instead of having their rows deleted.

A leaf partition qualifies when the table is range-partitioned on the rule's column alone, the rule
has no extra ``where`` filters, and the partition's upper bound is at or before the cutoff (so no
row in it can be younger than the retention, now or later). ``DETACH ... CONCURRENTLY`` is used
unless a DEFAULT partition exists (PostgreSQL forbids it then); an interrupted concurrent detach is
completed with ``FINALIZE``. Every step is recorded in the progress row first, so a crash between
detach and drop is finished by the rerun.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psycopg import errors as pg_errors
from psycopg import sql

from . import archive
from .rules import Partition, TableFacts, ident

if TYPE_CHECKING:
    from .purge import RulePurge


def expired_partitions(conn: Any, facts: TableFacts, column: str, has_filters: bool, cutoff: Any) -> list[Partition]:
    """Leaf partitions whose range ends at or before ``cutoff`` (read-only)."""
    if has_filters or facts.partition_key != [column]:
        return []
    out = []
    for part in facts.partitions:
        if part.upper is None:
            continue
        if conn.execute("SELECT %s::timestamptz <= %s::timestamptz", [part.upper, cutoff]).fetchone()[0]:
            out.append(part)
    return out


def drop_expired(purge: RulePurge, facts: TableFacts) -> list[dict[str, Any]]:
    conn, ep, rule = purge.conn, purge.ep, purge.rule
    assert ep is not None
    recorded: dict[str, Any] = dict(ep.state.get("partitions", {}))
    for part in expired_partitions(conn, facts, rule.column, bool(rule.where), ep.cutoff):
        recorded.setdefault(part.qualified, {"schema": part.schema, "name": part.name, "state": "planned",
                                             "pending": part.detach_pending})
    conn.commit()
    done = []
    for qualified, entry in sorted(recorded.items()):
        if entry["state"] != "dropped":
            _one(purge, facts, qualified, entry, recorded)
        done.append({"partition": qualified, "rows": entry.get("rows"), "archive": entry.get("archive"),
                     "detached": entry.get("detach")})
    return done


def _save(purge: RulePurge, recorded: dict[str, Any]) -> None:
    assert purge.ep is not None
    with purge.conn.transaction():
        purge.progress.note(purge.conn, purge.ep, "partitions", recorded)


def _one(purge: RulePurge, facts: TableFacts, qualified: str, entry: dict[str, Any], recorded: dict[str, Any]) -> None:
    conn, ctx = purge.conn, purge.ctx
    child = ident(entry["schema"], entry["name"])
    if entry["state"] == "planned":
        entry["state"] = "detaching"
        _save(purge, recorded)
    if entry["state"] == "detaching":
        entry["detach"] = _detach(purge, facts, entry, child)
        entry["state"] = "detached"
        _save(purge, recorded)
        ctx.event("cleanup.partition_detached", table=facts.qualified, partition=qualified, mode=entry["detach"])
    if entry.get("rows") is None:
        entry["rows"] = int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(child)).fetchone()[0])
        conn.commit()
    if purge.rule.archive and not entry.get("archive"):
        assert purge.ep is not None
        key = f"{purge._archive_base()}/partitions/{qualified}.csv.gz"
        with conn.cursor() as cur:
            stored, rows = archive.stream_table(cur, ctx.storage, key, child)
        conn.commit()
        entry["archive"] = {"key": key, "location": stored.location, "rows": rows, "sha256": stored.sha256,
                            "size": stored.size}
        _save(purge, recorded)
    _drop(purge, child, qualified, entry, recorded)
    ctx.event("cleanup.partition_dropped", table=facts.qualified, partition=qualified, rows=entry["rows"],
              archive=entry.get("archive"))


def _detach(purge: RulePurge, facts: TableFacts, entry: dict[str, Any], child: sql.Identifier) -> str:
    parent = ident(facts.schema, facts.name)
    attached = purge.conn.execute("SELECT i.inhdetachpending FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                  "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND "
                                  "c.relname = %s", [entry["schema"], entry["name"]]).fetchone()
    purge.conn.commit()
    if attached is None:
        return entry.get("detach") or "already detached"
    pending = bool(attached[0])
    concurrent = not facts.has_default
    mode = "finalize" if pending else ("concurrently" if concurrent else "plain")
    stmt = sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent, child)
    if mode != "plain":
        stmt = stmt + sql.SQL(" FINALIZE" if pending else " CONCURRENTLY")
    while True:
        try:
            with purge.ctx.db.connect(autocommit=True) as ac:
                ac.execute("SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                           [f"{purge.p.lock_timeout_ms}ms", f"{max(purge.p.statement_timeout_ms, 60000)}ms"])
                ac.execute(stmt)
            return mode
        except (pg_errors.LockNotAvailable, pg_errors.QueryCanceled) as exc:
            why = "lock_timeout" if isinstance(exc, pg_errors.LockNotAvailable) else "statement_timeout"
            purge._backoff(facts, why)
            if mode == "concurrently":  # a cancelled concurrent detach leaves it pending: finish it instead
                if purge.conn.execute("SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = "
                                      "i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
                                      "AND c.relname = %s AND i.inhdetachpending)",
                                      [entry["schema"], entry["name"]]).fetchone()[0]:
                    mode = "finalize"
                    stmt = sql.SQL("ALTER TABLE {} DETACH PARTITION {} FINALIZE").format(parent, child)
                purge.conn.commit()


def _drop(purge: RulePurge, child: sql.Identifier, qualified: str, entry: dict[str, Any],
          recorded: dict[str, Any]) -> None:
    assert purge.ep is not None
    while True:
        try:
            with purge.conn.transaction():
                purge.conn.execute("SELECT set_config('lock_timeout', %s, true)", [f"{purge.p.lock_timeout_ms}ms"])
                purge.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(child))
                entry["state"] = "dropped"
                purge.progress.note(purge.conn, purge.ep, "partitions", recorded)
                purge.progress.advance(purge.conn, purge.ep, qualified, None, int(entry["rows"]), True)
            return
        except pg_errors.LockNotAvailable:
            entry["state"] = "detached"
            purge._backoff(TableFacts(entry["schema"], entry["name"], "r", None), "lock_timeout")
