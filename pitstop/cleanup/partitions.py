"""Leaf partitions wholly past the cutoff are detached and dropped (archived first with ``archive: true``).

Which leaves qualify is read from the catalog by :mod:`.bounds` (sub-partitions leaf by leaf, DEFAULT
never, names never). A qualifying leaf that rows of another table still reference (any foreign key)
is first emptied row by row, so that the keys' ON DELETE actions apply (:mod:`.fkeys`).

Progress rows are hints, never permission. The episode's recorded partitions say where a crashed run
stopped, but a row in ``pitstop_cleanup_progress`` can be written by anyone with INSERT on it. So:

* **before a DETACH**, in one transaction holding ``SHARE UPDATE EXCLUSIVE`` locks (``LOCK TABLE
  ONLY``: DML goes on) on the rule's table and every ancestor of the leaf (no concurrent DDL can
  re-partition them), the catalog must show the table as a leaf (attached, or detach-pending) of the
  rule's tree, with the recorded OID, that qualifies by its bounds against the *smaller* of the
  episode's cutoff and a cutoff computed now. In the same transaction pitstop marks the leaf with a
  comment naming the episode, the rule's table and the leaf's OID (``COMMENT ON`` needs ownership: a
  role that can only write progress rows cannot forge it). A plain DETACH runs in that very
  transaction; ``DETACH ... CONCURRENTLY`` cannot run inside one and follows right after it (the
  parent's DEFAULT partition, another leaf of the parent left detach-pending, or PostgreSQL 13 force
  the plain form; an interrupted concurrent detach is completed with ``FINALIZE``).
* **before a DROP**, in the DROP's own transaction and under an ACCESS EXCLUSIVE lock on the table:
  it is an ordinary table with the recorded OID and name, no partition of anything, carrying this
  episode's exact mark, and no row of it has the rule's column at or after the cutoff (or NULL).

Anything else is refused with a ``cleanup.partition_refused`` event and left alone; nothing is dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psycopg import errors as pg_errors
from psycopg import sql

from . import archive, bounds, fkeys
from .bounds import Leaf
from .rules import TableFacts, ident

if TYPE_CHECKING:
    from .purge import RulePurge

STATES = ("planned", "detaching", "detached", "dropped")


class _Refused(Exception):
    pass


def marker(episode: int, facts: TableFacts, leaf_oid: int) -> str:
    return (f"pitstop: detached by cleanup episode {episode} from table oid {facts.oid} ({facts.qualified}); "
            f"leaf oid {leaf_oid}")


def _refuse(purge: RulePurge, facts: TableFacts, qualified: str, why: str) -> None:
    purge.refused.append({"partition": qualified, "reason": why})
    purge.ctx.event("cleanup.partition_refused", table=facts.qualified, partition=qualified, reason=why)


def _malformed(qualified: Any, entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "progress entry is not an object"
    schema, name, oid = entry.get("schema"), entry.get("name"), entry.get("oid")
    if not isinstance(schema, str) or not isinstance(name, str) or qualified != f"{schema}.{name}":
        return "progress entry does not name its table consistently"
    if entry.get("state") not in STATES:
        return "progress entry has an unknown state"
    if oid is not None and (isinstance(oid, bool) or not isinstance(oid, int) or oid <= 0):
        return "progress entry has an invalid table oid"
    if oid is None and entry["state"] != "planned":
        return "progress entry records no table oid"
    return None


def _recorded(purge: RulePurge, facts: TableFacts) -> dict[str, dict[str, Any]]:
    """The episode's partition entries that are at least well-formed (still only hints)."""
    assert purge.ep is not None
    raw = purge.ep.state.get("partitions", {})
    if not isinstance(raw, dict):
        _refuse(purge, facts, "(progress row)", "the episode's partition state is not a mapping: ignored")
        return {}
    out = {}
    for qualified, entry in raw.items():
        why = _malformed(qualified, entry)
        if why:
            _refuse(purge, facts, str(qualified), why)
        else:
            out[qualified] = {k: entry[k] for k in ("schema", "name", "oid", "state", "detach", "archive", "rows")
                              if k in entry}
    return out


def drop_expired(purge: RulePurge, facts: TableFacts) -> list[dict[str, Any]]:
    conn, rule = purge.conn, purge.rule
    recorded = _recorded(purge, facts)
    for leaf in bounds.expired_leaves(conn, facts.oid, facts.kind, rule.column, bool(rule.where), purge.safe_cutoff):
        recorded.setdefault(leaf.qualified, {"schema": leaf.node.schema, "name": leaf.node.name,
                                             "oid": leaf.node.oid, "state": "planned"})
    keys = fkeys.keys_into(conn, fkeys.tree_oids(conn, facts.oid))
    conn.commit()
    done = []
    for qualified, entry in sorted(recorded.items()):
        if entry["state"] == "dropped":
            gone = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = %s)", [entry["oid"]]).fetchone()
            conn.commit()
            if not gone[0]:
                _refuse(purge, facts, qualified, "the progress row says it was dropped, but the table exists: "
                        "not trusted, left alone")
                continue
            done.append({"partition": qualified, "rows": entry.get("rows"), "archive": entry.get("archive"),
                         "detached": entry.get("detach"), "earlier_run": True})
        elif _one(purge, facts, keys, qualified, entry, recorded):
            done.append({"partition": qualified, "rows": entry.get("rows"), "archive": entry.get("archive"),
                         "detached": entry.get("detach")})
    return done


def _save(purge: RulePurge, recorded: dict[str, Any]) -> None:
    assert purge.ep is not None
    purge.progress.note(purge.conn, purge.ep, "partitions", recorded)


def _find_leaf(purge: RulePurge, facts: TableFacts, entry: dict[str, Any]) -> Leaf | None:
    """The entry's table as a leaf (attached or detach-pending) of the rule's tree, by name and OID."""
    for leaf in bounds.leaves(purge.conn, facts.oid, purge.rule.column):
        if (leaf.node.schema, leaf.node.name) == (entry["schema"], entry["name"]):
            return leaf if entry.get("oid") in (None, leaf.node.oid) else None
    return None


def _ours(purge: RulePurge, facts: TableFacts, entry: dict[str, Any]) -> bool:
    """A table this episode detached: that OID and name, no partition of anything, carrying our mark."""
    assert purge.ep is not None
    row = purge.conn.execute(
        "SELECT c.relispartition, obj_description(c.oid, 'pg_class') FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE c.oid = %s AND n.nspname = %s AND c.relname = %s AND c.relkind = 'r'",
        [entry["oid"], entry["schema"], entry["name"]]).fetchone()
    return row is not None and not row[0] and row[1] == marker(purge.ep.id, facts, entry["oid"])


def _one(purge: RulePurge, facts: TableFacts, keys: list[fkeys.ForeignKey], qualified: str, entry: dict[str, Any],
         recorded: dict[str, Any]) -> bool:
    conn = purge.conn
    leaf = _find_leaf(purge, facts, entry)
    ok = leaf is not None and bounds.qualifies(conn, leaf, purge.safe_cutoff)
    conn.commit()
    if leaf is not None:
        if not ok:
            _refuse(purge, facts, qualified, "the catalog does not show every row of it past the cutoff "
                    "(DEFAULT partition, younger bound, no range bound on the rule's column, or not a table)")
            return False
        entry["oid"] = leaf.node.oid
        lineage = [facts.oid, *(n.oid for n in leaf.ancestors)]
        referenced = fkeys.leaf_is_referenced(conn, keys, leaf.node.oid, lineage, leaf.node.schema, leaf.node.name)
        conn.commit()
        if referenced:  # PostgreSQL refuses to detach a referenced partition: empty it first, actions apply
            purge.empty_leaf(leaf.node.schema, leaf.node.name)
            purge.ctx.event("cleanup.partition_emptied", table=facts.qualified, partition=qualified,
                            reason="rows of another table reference it: deleted row by row first (ON DELETE "
                                   "actions apply)")
        try:
            _detach(purge, facts, leaf, entry, recorded)
        except _Refused as exc:
            _refuse(purge, facts, qualified, str(exc))
            return False
    else:
        ours = _ours(purge, facts, entry) if entry["state"] != "planned" else False
        conn.commit()
        if not ours:
            _refuse(purge, facts, qualified, "not a leaf partition of this table, and not a table this episode "
                    "detached: the progress row is not trusted")
            return False
    if purge.rule.archive:
        _archive(purge, qualified, entry, recorded)
    return _drop(purge, facts, qualified, entry, recorded)


def _detach(purge: RulePurge, facts: TableFacts, leaf: Leaf, entry: dict[str, Any], recorded: dict[str, Any]) -> None:
    """Re-check under locks, mark, detach; raises _Refused when the catalog no longer allows it."""
    assert purge.ep is not None
    conn, node = purge.conn, leaf.node
    child, parent = ident(node.schema, node.name), ident(node.parent_schema, node.parent_name)
    plain_only = False
    while True:
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", [f"{purge.p.lock_timeout_ms}ms"])
                for table in [ident(facts.schema, facts.name), *(ident(a.schema, a.name) for a in leaf.ancestors)]:
                    conn.execute(sql.SQL("LOCK TABLE ONLY {} IN SHARE UPDATE EXCLUSIVE MODE").format(table))
                now = _find_leaf(purge, facts, entry)
                if now is None or now.node.parent_oid != node.parent_oid or \
                        not bounds.qualifies(conn, now, purge.safe_cutoff):
                    raise _Refused("at detach time the catalog no longer shows it as a leaf of this table wholly "
                                   "past the cutoff")
                mode = _mode(purge, now, plain_only)
                conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(
                    child, sql.Literal(marker(purge.ep.id, facts, node.oid))))
                if mode == "plain":
                    conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent, child))
                entry.update(state="detached" if mode == "plain" else "detaching", detach=mode)
                _save(purge, recorded)
            if mode != "plain":
                _detach_concurrently(purge, parent, child, mode)
                with conn.transaction():
                    entry["state"] = "detached"
                    _save(purge, recorded)
            purge.ctx.event("cleanup.partition_detached", table=facts.qualified, partition=node.qualified, mode=mode)
            return
        except (pg_errors.LockNotAvailable, pg_errors.QueryCanceled) as exc:
            why = "lock_timeout" if isinstance(exc, pg_errors.LockNotAvailable) else "statement_timeout"
            purge._backoff(TableFacts(node.schema, node.name, "r", None), why)
        except pg_errors.ObjectNotInPrerequisiteState:
            if plain_only:
                raise
            plain_only = True  # another leaf of the parent is detach-pending: only the plain form works now
        except pg_errors.ForeignKeyViolation as exc:
            raise purge.fk_failure(node.qualified, exc) from None


def _mode(purge: RulePurge, leaf: Leaf, plain_only: bool) -> str:
    if leaf.node.pending:
        return "finalize"
    if plain_only or purge.conn.info.server_version < 140000:
        return "plain"  # PostgreSQL 13 has no DETACH ... CONCURRENTLY
    has_default = purge.conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s "
        "AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT')", [leaf.node.parent_oid]).fetchone()[0]
    return "plain" if has_default else "concurrently"


def _detach_concurrently(purge: RulePurge, parent: sql.Identifier, child: sql.Identifier, mode: str) -> None:
    """``DETACH ... CONCURRENTLY`` (or ``FINALIZE``) on its own autocommit connection; a cancelled one
    leaves the leaf detach-pending, which the retry (``_detach`` again) finds and finalizes."""
    stmt = sql.SQL("ALTER TABLE {} DETACH PARTITION {} ").format(parent, child) + \
        sql.SQL("FINALIZE" if mode == "finalize" else "CONCURRENTLY")
    with purge.ctx.db.connect(autocommit=True) as ac:
        ac.execute("SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                   [f"{purge.p.lock_timeout_ms}ms", f"{max(purge.p.statement_timeout_ms, 60000)}ms"])
        ac.execute(stmt)


def _archive(purge: RulePurge, qualified: str, entry: dict[str, Any], recorded: dict[str, Any]) -> None:
    """Stream the detached table to storage, unless this exact object is already there (a resumed episode)."""
    conn, storage = purge.conn, purge.ctx.storage
    key = f"{purge._archive_base()}/partitions/{qualified}.csv.gz"
    done = entry.get("archive")
    if isinstance(done, dict) and done.get("key") == key and storage.exists(key) and storage.size(key) == done.get(
            "size"):
        return
    with conn.cursor() as cur:
        stored, rows = archive.stream_table(cur, storage, key, ident(entry["schema"], entry["name"]))
    conn.commit()
    entry["archive"] = {"key": key, "location": stored.location, "rows": rows, "sha256": stored.sha256,
                        "size": stored.size}
    with conn.transaction():
        _save(purge, recorded)


def _drop(purge: RulePurge, facts: TableFacts, qualified: str, entry: dict[str, Any], recorded: dict[str, Any]) -> bool:
    assert purge.ep is not None
    conn, child = purge.conn, ident(entry["schema"], entry["name"])
    column = sql.Identifier(purge.rule.column)
    while True:
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", [f"{purge.p.lock_timeout_ms}ms"])
                conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(child))
                if not _ours(purge, facts, entry):
                    raise _Refused("changed between its detach and its drop (no longer the table this episode "
                                   "detached)")
                rows, younger = conn.execute(
                    sql.SQL("SELECT count(*), count(*) FILTER (WHERE NOT coalesce({} < %s, false)) FROM {}").format(
                        column, child), [purge.safe_cutoff]).fetchone()
                if younger:
                    raise _Refused(f"holds {younger} row(s) not older than the cutoff: left detached, not dropped "
                                   "(inspect it, then re-attach it or drop it by hand)")
                conn.execute(sql.SQL("DROP TABLE {}").format(child))
                entry.update(state="dropped", rows=int(rows))
                _save(purge, recorded)
                purge.progress.advance(conn, purge.ep, qualified, None, int(rows), True)
            purge.ctx.event("cleanup.partition_dropped", table=facts.qualified, partition=qualified, rows=entry["rows"],
                            archive=entry.get("archive"))
            return True
        except _Refused as exc:
            entry["state"] = "detached"
            _refuse(purge, facts, qualified, str(exc))
            return False
        except (pg_errors.UndefinedTable, pg_errors.UndefinedColumn, pg_errors.DependentObjectsStillExist) as exc:
            entry["state"] = "detached"
            _refuse(purge, facts, qualified, f"cannot be dropped: {str(exc).splitlines()[0]}")
            return False
        except pg_errors.LockNotAvailable:
            entry["state"] = "detached"
            purge._backoff(TableFacts(entry["schema"], entry["name"], "r", None), "lock_timeout")
