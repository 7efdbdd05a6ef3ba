"""Which leaf partitions hold only rows older than a cutoff: read from the catalog, never from names.

The partition tree under the rule's table is walked through ``pg_inherits`` (sub-partitions, leaves
in other schemas and detach-pending leaves included). For every node the catalog says how its
parent is partitioned (``pg_partitioned_table``) and what its own bound is (``relpartbound``). A
level counts only when its parent is partitioned ``BY RANGE`` on the rule's column alone and that
column is a ``date``, ``timestamp`` or ``timestamptz``: then every row below the node satisfies
``column < upper`` (range upper bounds are exclusive and range keys are never NULL).

A leaf *qualifies* (may be dropped whole) when it is an ordinary table, is not a DEFAULT partition,
and at least one level on its path from the rule's table down to itself (an ancestor's bound or its
own) has an upper bound at or before the cutoff. List and hash levels, multi-column range keys,
``MAXVALUE`` and ranges on another column never make a leaf qualify; those leaves are purged by rows
(modes ``drop`` and ``rows``) or kept (``drop_only``).

The bound literal is compared in PostgreSQL (``'<upper>'::timestamptz <= cutoff``), in the same
session and so with the same ``TimeZone`` that the rule's own ``column < cutoff`` uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

TREE = """
WITH RECURSIVE tree(relid, parent, path) AS (
    SELECT i.inhrelid, i.inhparent, ARRAY[i.inhrelid] FROM pg_inherits i WHERE i.inhparent = %(root)s
  UNION ALL
    SELECT i.inhrelid, i.inhparent, t.path || i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.relid
)
SELECT t.relid, t.parent, n.nspname, c.relname, c.relkind, pg_get_expr(c.relpartbound, c.oid),
       coalesce((to_jsonb(i) ->> 'inhdetachpending')::boolean, false),
       t.path, pn.nspname, pc.relname,
       coalesce((SELECT p.partstrat = 'r' AND p.partnatts = 1 AND a.attname = %(column)s
                        AND a.atttypid IN ('date'::regtype, 'timestamp'::regtype, 'timestamptz'::regtype)
                   FROM pg_partitioned_table p
                   JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
                  WHERE p.partrelid = t.parent), false)
FROM tree t JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_inherits i ON i.inhrelid = t.relid AND i.inhparent = t.parent
JOIN pg_class pc ON pc.oid = t.parent JOIN pg_namespace pn ON pn.oid = pc.relnamespace
"""

# ``FOR VALUES FROM (...) TO ('<one literal>')``: anything else (MAXVALUE, several columns) has no usable upper.
_UPPER = re.compile(r"^FOR VALUES FROM \(.*\) TO \('((?:[^']|'')*)'\)$", re.DOTALL)


def upper_bound(bound: str | None) -> str | None:
    """``FOR VALUES FROM ('a') TO ('b')`` → ``b``; None for DEFAULT, MAXVALUE, list/hash or multi-column bounds."""
    m = _UPPER.match(bound or "")
    return m.group(1).replace("''", "'") if m else None


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
    ancestors: list[Node] = field(default_factory=list)  # from the rule's table's child down to the leaf's parent

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
        leaf = Leaf(node, ancestors=[nodes[oid] for oid in node.path[:-1]])
        for oid in node.path:  # from the top-level partition down to the leaf
            n = nodes[oid]
            if n.range_on_column and (upper := upper_bound(n.bound)) is not None:
                leaf.uppers.append(upper)
        out.append(leaf)
    return sorted(out, key=lambda lf: (lf.node.schema, lf.node.name))


def qualifies(conn: Any, leaf: Leaf, cutoff: Any) -> bool:
    """Every row the catalog lets into this leaf is older than ``cutoff``."""
    if leaf.node.kind != "r" or leaf.node.is_default or not leaf.uppers:
        return False
    row = conn.execute("SELECT coalesce(bool_or(u::timestamptz <= %s::timestamptz), false) FROM unnest(%s::text[]) u",
                       [cutoff, leaf.uppers]).fetchone()
    return bool(row[0])


def binding_upper(conn: Any, leaf: Leaf) -> str | None:
    """The earliest upper bound of the leaf's path (what the plan shows)."""
    if not leaf.uppers:
        return None
    row = conn.execute("SELECT u FROM unnest(%s::text[]) u ORDER BY u::timestamptz LIMIT 1", [leaf.uppers]).fetchone()
    return str(row[0])


def expired_leaves(conn: Any, root_oid: int, kind: str, column: str, has_filters: bool, cutoff: Any) -> list[Leaf]:
    """Leaves all of whose rows are older than ``cutoff`` (read-only)."""
    if has_filters or kind != "p":
        return []
    return [lf for lf in leaves(conn, root_oid, column) if qualifies(conn, lf, cutoff)]
