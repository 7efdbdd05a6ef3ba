"""Retention rules as SQL: the condition, the fixed cutoff, counts, and the facts about a table.

Identifiers only through ``psycopg.sql.Identifier``; every config value is a query parameter.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import sql

from ..config import Filter, RetentionRule
from ..errors import StepFailed

OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
INT_TYPES = {"int2", "int4", "int8"}


def rule_key(rule: RetentionRule) -> str:
    """Stable identity of a rule (what it deletes), used to find an unfinished purge to resume."""
    body = rule.model_dump(mode="json", by_alias=True, include={"table", "schema_", "column", "older_than", "where"})
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]


def condition(rule: RetentionRule, cutoff: datetime, alias: str | None = None) -> tuple[sql.Composable, list[Any]]:
    """``<column> < %s AND <filters>`` with its parameters (columns qualified by ``alias`` if given)."""
    def col(name: str) -> sql.Identifier:
        return sql.Identifier(alias, name) if alias else sql.Identifier(name)

    parts: list[sql.Composable] = [sql.SQL("{} < %s").format(col(rule.column))]
    args: list[Any] = [cutoff]
    for f in rule.where:
        part, values = _filter(f, col(f.column))
        parts.append(part)
        args += values
    return sql.SQL(" AND ").join(parts), args


def _filter(f: Filter, col: sql.Identifier) -> tuple[sql.Composable, list[Any]]:
    if f.op == "is_null":
        return sql.SQL("{} IS NULL").format(col), []
    if f.op == "is_not_null":
        return sql.SQL("{} IS NOT NULL").format(col), []
    if f.op == "in":
        values = f.value if isinstance(f.value, list) else [f.value]
        return sql.SQL("{} = ANY(%s)").format(col), [values]
    return sql.SQL("{} {} %s").format(col, sql.SQL(OPS[f.op])), [f.value]


def fix_cutoff(conn: Any, rule: RetentionRule) -> datetime:
    row = conn.execute("SELECT now() - %s::interval", [rule.older_than]).fetchone()
    return row[0]


def ident(schema: str, table: str) -> sql.Identifier:
    return sql.Identifier(schema, table)


def count(conn: Any, schema: str, table: str, rule: RetentionRule | None = None,
          cutoff: datetime | None = None) -> int:
    q: sql.Composable = sql.SQL("SELECT count(*) FROM {}").format(ident(schema, table))
    args: list[Any] = []
    if rule is not None and cutoff is not None:
        cond, args = condition(rule, cutoff)
        q = q + sql.SQL(" WHERE ") + cond
    return int(conn.execute(q, args).fetchone()[0])


@dataclass
class Partition:
    schema: str
    name: str
    oid: int
    kind: str  # 'r' table, 'f' foreign table

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass
class TableFacts:
    schema: str
    name: str
    kind: str  # 'r' table, 'p' partitioned table
    pk: str | None  # single-column integer primary key, else None (ctid strategy)
    partition_key: list[str] = field(default_factory=list)
    partitions: list[Partition] = field(default_factory=list)
    has_default: bool = False
    oid: int = 0

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def table_facts(conn: Any, schema: str, table: str) -> TableFacts:
    row = conn.execute(
        "SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')", [schema, table]).fetchone()
    if row is None:
        raise StepFailed(f"retention rule names {schema}.{table}, which does not exist")
    oid, kind = row
    facts = TableFacts(schema=schema, name=table, kind=kind, pk=_int_pk(conn, oid), oid=oid)
    if kind == "p":
        facts.partition_key = [r[0] for r in conn.execute(
            "SELECT a.attname FROM pg_partitioned_table p, unnest(p.partattrs) WITH ORDINALITY k(attnum, i) "
            "JOIN pg_attribute a ON a.attrelid = %s AND a.attnum = k.attnum "
            "WHERE p.partrelid = %s AND p.partstrat = 'r' ORDER BY k.i", [oid, oid]).fetchall()]
        facts.partitions, facts.has_default = _partitions(conn, oid)
    return facts


def _int_pk(conn: Any, oid: int) -> str | None:
    rows = conn.execute(
        "SELECT a.attname, t.typname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE i.indrelid = %s AND i.indisprimary", [oid]).fetchall()
    if len(rows) == 1 and rows[0][1] in INT_TYPES:
        return str(rows[0][0])
    return None


def _partitions(conn: Any, oid: int) -> tuple[list[Partition], bool]:
    """Leaf partitions (recursively, other schemas and detach-pending ones included), from the catalog."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname, c.oid, c.relkind, pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT' "
        "FROM pg_partition_tree(%s::regclass) t JOIN pg_class c ON c.oid = t.relid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.isleaf ORDER BY n.nspname, c.relname", [oid]).fetchall()
    return [Partition(r[0], r[1], r[2], r[3]) for r in rows], any(r[4] for r in rows)
