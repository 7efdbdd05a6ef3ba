"""Database cleanup: retention purges in small batches, then VACUUM (ANALYZE).

Identifiers only through ``psycopg.sql.Identifier``; config values only as query parameters. Each
batch is its own short transaction with ``lock_timeout`` and ``statement_timeout`` so live traffic
is never blocked for long. The cutoff is fixed once per rule, so the purge never reaches a row that
was younger than the retention when the step started.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from psycopg import errors as pg_errors
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field

from ..config import Filter, RetentionRule
from ..context import RunContext
from ..errors import GateRefused, StepFailed
from ..model import StepOutcome
from ..registry import Placement, Target, planner, step

OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


class RetentionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tables: list[str] | None = Field(None, description="limit to these rule tables (default: all rules)")
    lock_timeout_ms: int = Field(200, ge=1)
    statement_timeout_ms: int = Field(5000, ge=1)
    allow_large_share: bool = Field(False, description="allow a rule to purge more than its max_share")


class VacuumParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tables: list[str] | None = None


def rule_condition(rule: RetentionRule) -> tuple[sql.Composable, list[Any]]:
    """``<column> < %s AND <filters>``: the cutoff is the first parameter."""
    parts: list[sql.Composable] = [sql.SQL("{} < %s").format(sql.Identifier(rule.column))]
    args: list[Any] = []
    for f in rule.where:
        part, values = _filter(f)
        parts.append(part)
        args += values
    return sql.SQL(" AND ").join(parts), args


def _filter(f: Filter) -> tuple[sql.Composable, list[Any]]:
    col = sql.Identifier(f.column)
    if f.op == "is_null":
        return sql.SQL("{} IS NULL").format(col), []
    if f.op == "is_not_null":
        return sql.SQL("{} IS NOT NULL").format(col), []
    if f.op == "in":
        values = f.value if isinstance(f.value, list) else [f.value]
        return sql.SQL("{} = ANY(%s)").format(col), [values]
    return sql.SQL("{} {} %s").format(col, sql.SQL(OPS[f.op])), [f.value]


def _rules(ctx: RunContext, tables: list[str] | None) -> list[RetentionRule]:
    return [r for r in ctx.cfg.retention if tables is None or r.table in tables or r.qualified in tables]


def _cutoff(conn: Any, rule: RetentionRule) -> datetime:
    row = conn.execute("SELECT now() - %s::interval", [rule.older_than]).fetchone()
    return row[0]


def count_expired(conn: Any, rule: RetentionRule, cutoff: datetime) -> tuple[int, int]:
    table = sql.Identifier(rule.schema_, rule.table)
    cond, args = rule_condition(rule)
    total = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()[0]
    expired = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE ").format(table) + cond,
                           [cutoff, *args]).fetchone()[0]
    return int(total), int(expired)


def purge_rule(ctx: RunContext, conn: Any, rule: RetentionRule, params: RetentionParams) -> dict[str, Any]:
    cutoff = _cutoff(conn, rule)
    conn.commit()
    total, expired = count_expired(conn, rule, cutoff)
    conn.commit()
    share = expired / total if total else 0.0
    if share > rule.max_share and not params.allow_large_share:
        raise GateRefused(f"retention rule on {rule.qualified} would delete {expired} of {total} rows "
                          f"({share:.0%} > max_share {rule.max_share:.0%}); refusing")
    table = sql.Identifier(rule.schema_, rule.table)
    cond, args = rule_condition(rule)
    delete = (sql.SQL("DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE ").format(t=table)
              + cond + sql.SQL(" LIMIT %s))"))
    deleted, batches, retries, longest = 0, 0, 0, 0.0
    t0 = time.monotonic()
    while True:
        b0 = time.monotonic()
        try:
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{params.lock_timeout_ms}ms")))
                conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(
                    sql.Literal(f"{params.statement_timeout_ms}ms")))
                cur = conn.execute(delete, [cutoff, *args, rule.batch_size])
                n = cur.rowcount
        except pg_errors.LockNotAvailable:
            retries += 1
            if retries > 50:
                raise StepFailed(f"{rule.qualified}: gave up after {retries} lock timeouts") from None
            time.sleep(min(2.0, 0.05 * 2 ** min(retries, 5)))
            continue
        longest = max(longest, time.monotonic() - b0)
        batches += 1
        deleted += n
        if n < rule.batch_size:
            break
    elapsed = time.monotonic() - t0
    result = {"table": rule.qualified, "column": rule.column, "older_than": str(rule.older_than),
              "cutoff": cutoff.isoformat(), "rows_before": total, "expired": expired, "deleted": deleted,
              "rows_after": total - deleted, "batches": batches, "lock_retries": retries,
              "longest_batch_ms": round(longest * 1000, 1), "duration_s": round(elapsed, 3),
              "rows_per_s": round(deleted / elapsed, 1) if elapsed > 0 else None}
    ctx.event("cleanup.purged", **result)
    return result


@step("cleanup.retention", params=RetentionParams, placement=Placement.OUTSIDE, target=Target.DATABASE,
      destructive=True)
def cleanup_retention(ctx: RunContext, params: RetentionParams) -> StepOutcome:
    """Purge rows older than each retention rule, in small batches."""
    results = []
    with ctx.db.connect() as conn:
        for rule in _rules(ctx, params.tables):
            results.append(purge_rule(ctx, conn, rule, params))
    ctx.state.setdefault("cleanup", []).extend(results)
    total = sum(r["deleted"] for r in results)
    return StepOutcome(changed=total > 0, summary=", ".join(f"{r['table']}: {r['deleted']} rows" for r in results)
                       or "no rules", data={"cleanup": results})


@planner("cleanup.retention")
def plan_retention(ctx: RunContext, params: RetentionParams) -> list[str]:
    lines = []
    with ctx.db.connect() as conn:
        conn.read_only = True
        for rule in _rules(ctx, params.tables):
            cutoff = _cutoff(conn, rule)
            total, expired = count_expired(conn, rule, cutoff)
            lines.append(f"{rule.qualified}: purge {expired} of {total} rows with {rule.column} older than "
                         f"{rule.older_than.days}d (before {cutoff:%Y-%m-%d %H:%M})")
        conn.rollback()
    return lines


@step("database.vacuum_analyze", params=VacuumParams, placement=Placement.OUTSIDE, target=Target.DATABASE)
def vacuum_analyze(ctx: RunContext, params: VacuumParams) -> StepOutcome:
    """VACUUM (ANALYZE) the tables touched by retention (or the listed ones)."""
    names = params.tables or [r.qualified for r in ctx.cfg.retention]
    done = []
    with ctx.db.connect(autocommit=True) as conn:
        for name in names:
            schema, _, table = name.rpartition(".")
            ident = sql.Identifier(schema or "public", table)
            t0 = time.monotonic()
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(ident))
            done.append({"table": name, "duration_s": round(time.monotonic() - t0, 3)})
    return StepOutcome(changed=True, summary=f"{len(done)} tables vacuumed and analyzed", data={"vacuum": done})


@planner("database.vacuum_analyze")
def plan_vacuum(ctx: RunContext, params: VacuumParams) -> list[str]:
    return [f"VACUUM (ANALYZE) {t}" for t in (params.tables or [r.qualified for r in ctx.cfg.retention])]
