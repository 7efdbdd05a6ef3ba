"""Leaf partitions wholly past the cutoff are detached and dropped (archived first with ``archive: true``).

Which leaves qualify is read from the catalog, never from names: the partition tree under the rule's
table is walked through ``pg_inherits`` (sub-partitions included), and a leaf qualifies when it, or
any ancestor below the rule's table, is a range partition of a table partitioned on the rule's column
alone whose upper bound is at or before the cutoff (then no row in it can be younger, now or later).
A DEFAULT partition is never dropped, and rules with ``where`` filters never drop whole partitions.

Progress rows are hints, never permission. The episode's recorded partitions say where a crashed run
stopped, but a row in ``pitstop_cleanup_progress`` can be written by anyone with INSERT on it. So:

* before a DETACH, the leaf must be, at that moment, a leaf of this rule's tree that qualifies by its
  catalog bounds against the *smaller* of the episode's cutoff and a cutoff computed now;
* just before detaching, pitstop marks the leaf with a comment naming the episode and the rule's
  table (``COMMENT ON`` needs ownership: a role that can only write progress rows cannot forge it);
* a table the progress row calls "detached" is dropped only if it is no partition any more and
  carries that exact mark; the mark is checked again inside the DROP's own transaction.

Anything else is refused with a ``cleanup.partition_refused`` event and left alone. ``DETACH ...
CONCURRENTLY`` is used unless the leaf's parent has a DEFAULT partition (PostgreSQL forbids it then);
an interrupted concurrent detach is completed with ``FINALIZE``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg import errors as pg_errors
from psycopg import sql

from . import archive
from .rules import TableFacts, _upper_bound, ident

if TYPE_CHECKING:
    from .purge import RulePurge

TREE = """
WITH RECURSIVE tree(relid, parent, path) AS (
    SELECT i.inhrelid, i.inhparent, ARRAY[i.inhrelid] FROM pg_inherits i WHERE i.inhparent = %(root)s
  UNION ALL
    SELECT i.inhrelid, i.inhparent, t.path || i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.relid
)
SELECT t.relid, t.parent, n.nspname, c.relname, c.relkind, pg_get_expr(c.relpartbound, c.oid),
       coalesce((to_jsonb(i) ->> 'inhdetachpending')::boolean, false),
       t.path, pn.nspname, pc.relname,
       (SELECT p.partstrat = 'r' AND p.partnatts = 1 AND a.attname = %(column)s
          FROM pg_partitioned_table p JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
         WHERE p.partrelid = t.parent)
FROM tree t JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_inherits i ON i.inhrelid = t.relid AND i.inhparent = t.parent
JOIN pg_class pc ON pc.oid = t.parent JOIN pg_namespace pn ON pn.oid = pc.relnamespace
"""


@dataclass
class Node:
    oid: int
    parent_oid: int
    schema: str
    name: str
    kind: str
    bound: str | None
    pending: bool
    path: list[int]
    parent_schema: str
    parent_name: str
    range_on_column: bool

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def is_default(self) -> bool:
        return self.bound == "DEFAULT"


@dataclass
class Leaf:
    node: Node
    uppers: list[str] = field(default_factory=list)  # range upper bounds on the rule's column, leaf or ancestors

    @property
    def qualified(self) -> str:
        return self.node.qualified


def tree(conn: Any, root_oid: int, column: str) -> dict[int, Node]:
    rows = conn.execute(TREE, {"root": root_oid, "column": column}).fetchall()
    return {r[0]: Node(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), list(r[7]), r[8], r[9], bool(r[10]))
            for r in rows}


def leaves(conn: Any, root_oid: int, column: str) -> list[Leaf]:
    """Every leaf under the rule's table, with the range upper bounds that hold for all its rows."""
    nodes = tree(conn, root_oid, column)
    out = []
    for node in nodes.values():
        if node.kind == "p":
            continue
        leaf = Leaf(node)
        for oid in node.path:  # from the top-level partition down to the leaf
            n = nodes[oid]
            if n.range_on_column and (upper := _upper_bound(n.bound)) is not None:
                leaf.uppers.append(upper)
        out.append(leaf)
    return sorted(out, key=lambda lf: (lf.node.schema, lf.node.name))


def _qualifies(conn: Any, leaf: Leaf, cutoff: Any) -> bool:
    if leaf.node.is_default or not leaf.uppers:
        return False
    return any(conn.execute("SELECT %s::timestamptz <= %s::timestamptz", [u, cutoff]).fetchone()[0]
               for u in leaf.uppers)


def expired_leaves(conn: Any, facts: TableFacts, column: str, has_filters: bool, cutoff: Any) -> list[Leaf]:
    """Leaves all of whose rows are older than ``cutoff`` (read-only)."""
    if has_filters or facts.kind != "p":
        return []
    return [lf for lf in leaves(conn, facts.oid, column) if _qualifies(conn, lf, cutoff)]


def _marker(purge: RulePurge, facts: TableFacts) -> str:
    assert purge.ep is not None
    return f"pitstop: detached by cleanup episode {purge.ep.id} from table oid {facts.oid} ({facts.qualified})"


def _refuse(purge: RulePurge, facts: TableFacts, qualified: str, why: str) -> None:
    purge.refused.append({"partition": qualified, "reason": why})
    purge.ctx.event("cleanup.partition_refused", table=facts.qualified, partition=qualified, reason=why)


def drop_expired(purge: RulePurge, facts: TableFacts) -> list[dict[str, Any]]:
    conn, ep, rule = purge.conn, purge.ep, purge.rule
    assert ep is not None
    cutoff = purge.safe_cutoff
    recorded: dict[str, Any] = dict(ep.state.get("partitions", {}))
    for leaf in expired_leaves(conn, facts, rule.column, bool(rule.where), cutoff):
        recorded.setdefault(leaf.qualified, {"schema": leaf.node.schema, "name": leaf.node.name, "state": "planned",
                                             "pending": leaf.node.pending})
    conn.commit()
    done = []
    for qualified, entry in sorted(recorded.items()):
        if not isinstance(entry, dict) or not {"schema", "name", "state"} <= set(entry):
            _refuse(purge, facts, qualified, "progress entry is malformed")
            continue
        if entry["state"] != "dropped":
            if not _one(purge, facts, qualified, entry, recorded):
                continue
        done.append({"partition": qualified, "rows": entry.get("rows"), "archive": entry.get("archive"),
                     "detached": entry.get("detach")})
    return done


def _save(purge: RulePurge, recorded: dict[str, Any]) -> None:
    assert purge.ep is not None
    with purge.conn.transaction():
        purge.progress.note(purge.conn, purge.ep, "partitions", recorded)


def _attached_leaf(purge: RulePurge, facts: TableFacts, entry: dict[str, Any]) -> Leaf | None:
    for leaf in leaves(purge.conn, facts.oid, purge.rule.column):
        if (leaf.node.schema, leaf.node.name) == (entry["schema"], entry["name"]):
            return leaf
    return None


def _is_marked(purge: RulePurge, facts: TableFacts, entry: dict[str, Any]) -> bool:
    """A table we detached: no partition of anything, carrying this episode's mark."""
    row = purge.conn.execute(
        "SELECT c.relispartition, obj_description(c.oid, 'pg_class') FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s AND c.relkind = 'r'",
        [entry["schema"], entry["name"]]).fetchone()
    return row is not None and not row[0] and row[1] == _marker(purge, facts)


def _one(purge: RulePurge, facts: TableFacts, qualified: str, entry: dict[str, Any], recorded: dict[str, Any]) -> bool:
    conn, ctx = purge.conn, purge.ctx
    child = ident(entry["schema"], entry["name"])
    leaf = _attached_leaf(purge, facts, entry)
    conn.commit()
    if leaf is not None:
        if not _qualifies(conn, leaf, purge.safe_cutoff):
            conn.commit()
            _refuse(purge, facts, qualified, "the catalog does not show every row of it past the cutoff "
                    "(DEFAULT partition, younger bound or no range bound on the rule's column)")
            return False
        conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(child, sql.Literal(_marker(purge, facts))))
        conn.commit()
        if entry["state"] == "planned":
            entry["state"] = "detaching"
            _save(purge, recorded)
        entry["detach"] = _detach(purge, leaf, entry, child)
        entry["state"] = "detached"
        _save(purge, recorded)
        ctx.event("cleanup.partition_detached", table=facts.qualified, partition=qualified, mode=entry["detach"])
    elif not _is_marked(purge, facts, entry):
        conn.commit()
        _refuse(purge, facts, qualified, "not a leaf partition of this table, and not a table this episode "
                "detached: the progress row is not trusted")
        return False
    conn.commit()
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
    if not _drop(purge, facts, child, qualified, entry, recorded):
        return False
    ctx.event("cleanup.partition_dropped", table=facts.qualified, partition=qualified, rows=entry["rows"],
              archive=entry.get("archive"))
    return True


def _detach(purge: RulePurge, leaf: Leaf, entry: dict[str, Any], child: sql.Identifier) -> str:
    node = leaf.node
    parent = ident(node.parent_schema, node.parent_name)
    has_default = purge.conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s "
        "AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT')", [node.parent_oid]).fetchone()[0]
    purge.conn.commit()
    pending = node.pending
    mode = "finalize" if pending else ("plain" if has_default else "concurrently")
    facts = TableFacts(node.schema, node.name, "r", None)

    def statement(mode: str) -> sql.Composed:
        stmt = sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent, child)
        return stmt + sql.SQL({"plain": "", "finalize": " FINALIZE", "concurrently": " CONCURRENTLY"}[mode])

    while True:
        try:
            with purge.ctx.db.connect(autocommit=True) as ac:
                ac.execute("SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                           [f"{purge.p.lock_timeout_ms}ms", f"{max(purge.p.statement_timeout_ms, 60000)}ms"])
                ac.execute(statement(mode))
            return mode
        except (pg_errors.FeatureNotSupported, pg_errors.SyntaxError):
            if mode != "concurrently":
                raise
            mode = "plain"  # PostgreSQL 13 (no CONCURRENTLY), or a parent that gained a DEFAULT partition
        except (pg_errors.LockNotAvailable, pg_errors.QueryCanceled) as exc:
            why = "lock_timeout" if isinstance(exc, pg_errors.LockNotAvailable) else "statement_timeout"
            purge._backoff(facts, why)
            if mode == "concurrently":  # a cancelled concurrent detach leaves it pending: finish it instead
                pending_now = purge.conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = %s AND "
                    "coalesce((to_jsonb(pg_inherits) ->> 'inhdetachpending')::boolean, false))", [node.oid]).fetchone()
                if pending_now[0]:
                    mode = "finalize"
                purge.conn.commit()


def _drop(purge: RulePurge, facts: TableFacts, child: sql.Identifier, qualified: str, entry: dict[str, Any],
          recorded: dict[str, Any]) -> bool:
    assert purge.ep is not None
    while True:
        try:
            with purge.conn.transaction():
                purge.conn.execute("SELECT set_config('lock_timeout', %s, true)", [f"{purge.p.lock_timeout_ms}ms"])
                exists = purge.conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                                            [child.as_string(purge.conn)]).fetchone()[0]
                if exists:
                    purge.conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(child))
                    if not _is_marked(purge, facts, entry):
                        raise _NotOurs()
                    purge.conn.execute(sql.SQL("DROP TABLE {}").format(child))
                entry["state"] = "dropped"
                purge.progress.note(purge.conn, purge.ep, "partitions", recorded)
                purge.progress.advance(purge.conn, purge.ep, qualified, None, int(entry["rows"]), True)
            return True
        except _NotOurs:
            entry["state"] = "detached"
            _refuse(purge, facts, qualified, "changed between its detach and its drop (no longer the table this "
                    "episode detached)")
            return False
        except pg_errors.LockNotAvailable:
            entry["state"] = "detached"
            purge._backoff(TableFacts(entry["schema"], entry["name"], "r", None), "lock_timeout")


class _NotOurs(Exception):
    pass
