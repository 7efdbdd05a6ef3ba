"""Foreign keys that point into a purged table, and what a purge does to the rows that reference it.

Keys are read from ``pg_constraint``: every key whose referenced table is the rule's table or any
partition below it (``conparentid = 0``: the key as declared, not the per-partition clones). For
each, the rows of the referencing table that point at a row the purge removes are counted:

* ``ON DELETE RESTRICT`` / ``NO ACTION``: those rows **block** the purge. pitstop refuses before
  deleting anything (the plan says ``BLOCKED``), naming the key, the referencing table and the count.
* ``CASCADE``: those rows are deleted with the rows they reference (counted here; rows that a
  cascade deletes further down, in tables referencing *them*, are not counted).
* ``SET NULL`` / ``SET DEFAULT``: those rows lose their reference.

PostgreSQL refuses to DETACH a partition that referenced rows point into, whatever the action, so a
leaf that would be dropped whole but is still referenced is first emptied row by row (the actions
apply), then detached and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql

from ..config import RetentionRule
from .rules import condition, ident

ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
BLOCKING = frozenset({"a", "r"})

KEYS = """
SELECT c.conname, c.conrelid, rn.nspname, rc.relname, c.confrelid, fn.nspname, fc.relname, c.confdeltype,
       ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
       ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i)
FROM pg_constraint c
JOIN pg_class rc ON rc.oid = c.conrelid JOIN pg_namespace rn ON rn.oid = rc.relnamespace
JOIN pg_class fc ON fc.oid = c.confrelid JOIN pg_namespace fn ON fn.oid = fc.relnamespace
WHERE c.contype = 'f' AND c.conparentid = 0 AND c.confrelid = ANY(%s::oid[])
ORDER BY rn.nspname, rc.relname, c.conname
"""


@dataclass
class ForeignKey:
    name: str
    referencing_oid: int
    referencing_schema: str
    referencing_table: str
    referenced_oid: int
    referenced_schema: str
    referenced_table: str
    action: str  # pg_constraint.confdeltype
    columns: list[str]
    ref_columns: list[str]

    @property
    def referencing(self) -> str:
        return f"{self.referencing_schema}.{self.referencing_table}"

    @property
    def on_delete(self) -> str:
        return ACTIONS.get(self.action, self.action)

    @property
    def blocks(self) -> bool:
        return self.action in BLOCKING


@dataclass
class Effect:
    key: ForeignKey
    rows: int  # referencing rows that point at a row the purge removes

    def as_dict(self) -> dict[str, Any]:
        return {"constraint": self.key.name, "table": self.key.referencing, "on_delete": self.key.on_delete,
                "rows": self.rows, "blocks": self.key.blocks and self.rows > 0}

    def line(self) -> str:
        k = self.key
        what = {"c": "would be deleted too", "n": "would be set to NULL", "d": "would be set to their default"}
        text = f"  referenced by {k.referencing} ({k.name}): ON DELETE {k.on_delete}"
        if k.blocks:
            return text + (f" — BLOCKED: {self.rows} referencing row(s) point at rows the purge removes"
                           if self.rows else ", no referencing row points at a row the purge removes")
        return text + f": {self.rows} referencing row(s) {what.get(k.action, 'are affected')}"


def keys_into(conn: Any, oids: list[int]) -> list[ForeignKey]:
    """Foreign keys referencing any of ``oids`` (the rule's table and the partitions below it)."""
    return [ForeignKey(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], list(r[8]), list(r[9]))
            for r in conn.execute(KEYS, [oids]).fetchall()]


def tree_oids(conn: Any, root_oid: int) -> list[int]:
    rows = conn.execute("SELECT relid::oid FROM pg_partition_tree(%s::oid::regclass)", [root_oid]).fetchall()
    return [int(r[0]) for r in rows] or [root_oid]


def _join(key: ForeignKey) -> sql.Composable:
    return sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier("p", rc), sql.Identifier("r", c))
                                 for c, rc in zip(key.columns, key.ref_columns, strict=True))


def referencing_rows(conn: Any, key: ForeignKey, rule: RetentionRule, cutoff: Any, in_tree: list[int],
                     only_leaves: list[int] | None = None) -> int:
    """Rows of the referencing table pointing at rows the rule removes (all expired rows, or only those
    in ``only_leaves`` for ``drop_only``). Referencing rows that are themselves removed (a table that
    references itself) are not counted."""
    cond, args = condition(rule, cutoff, alias="p")
    inner = sql.SQL("SELECT 1 FROM {} p WHERE ").format(ident(key.referenced_schema, key.referenced_table)) \
        + _join(key) + sql.SQL(" AND ") + cond
    if only_leaves is not None:
        inner += sql.SQL(" AND p.tableoid = ANY(%s::oid[])")
        args = [*args, only_leaves]
    q = sql.SQL("SELECT count(*) FROM {} r WHERE EXISTS (").format(
        ident(key.referencing_schema, key.referencing_table)) + inner + sql.SQL(")")
    if key.referencing_oid in in_tree:
        own, own_args = condition(rule, cutoff, alias="r")
        if only_leaves is not None:
            own += sql.SQL(" AND r.tableoid = ANY(%s::oid[])")
            own_args = [*own_args, only_leaves]
        q += sql.SQL(" AND NOT coalesce((") + own + sql.SQL("), false)")
        args = [*args, *own_args]
    return int(conn.execute(q, args).fetchone()[0])


def effects(conn: Any, root_oid: int, rule: RetentionRule, cutoff: Any,
            only_leaves: list[int] | None = None) -> list[Effect]:
    oids = tree_oids(conn, root_oid)
    return [Effect(k, referencing_rows(conn, k, rule, cutoff, oids, only_leaves)) for k in keys_into(conn, oids)]


def leaf_is_referenced(conn: Any, keys: list[ForeignKey], leaf_oid: int, lineage: list[int],
                       schema: str, name: str) -> bool:
    """Does any row point into this leaf through a key on the leaf itself or one of its ancestors?"""
    for key in keys:
        if key.referenced_oid not in lineage and key.referenced_oid != leaf_oid:
            continue
        q = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} r JOIN {} p ON ").format(
            ident(key.referencing_schema, key.referencing_table), ident(schema, name)) + _join(key) + sql.SQL(")")
        if conn.execute(q).fetchone()[0]:
            return True
    return False


def blocked_message(table: str, found: list[Effect]) -> str | None:
    blockers = [e for e in found if e.key.blocks and e.rows > 0]
    if not blockers:
        return None
    named = "; ".join(f"{e.rows} row(s) of {e.key.referencing} through foreign key {e.key.name} "
                      f"(ON DELETE {e.key.on_delete})" for e in blockers)
    return (f"{table}: rows past retention are still referenced — {named}. Nothing was deleted. Purge the "
            "referencing rows first (a retention rule on that table, listed before this one), or change the key "
            "to ON DELETE CASCADE / SET NULL")


def violation_message(where: str, exc: Any, deleted: int) -> str:
    """A foreign key violation at run time (a referencing row that appeared after the check)."""
    diag = exc.diag
    return (f"{where}: rows past retention are still referenced by {diag.table_name or 'another table'} (foreign key "
            f"{diag.constraint_name or '?'}, ON DELETE RESTRICT/NO ACTION): the statement was rolled back whole, "
            f"{deleted} row(s) deleted before it stay deleted (the progress row counts them). Purge the referencing "
            "rows first (a retention rule on that table, listed before this one) or change the key to ON DELETE "
            "CASCADE / SET NULL")
