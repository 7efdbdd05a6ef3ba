"""PostgreSQL checks: connects, replication lag, long-running and
idle-in-transaction sessions, invalid indexes, and a custom read-only SQL assertion.

Every query here is read-only; the custom assertion runs in a ``READ ONLY`` transaction with a
``statement_timeout``, as a prepared statement (one statement only: ``COMMIT; DELETE ...`` is refused
by the server) and is always rolled back. A lost connection is retried (pitstop.pgretry).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal

from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..context import RunContext
from ..model import CheckResult, CheckStatus
from ..pgretry import retry_pg
from ..registry import NoParams, Target
from ..units import Duration
from . import check, verdict

OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


@check("postgres_connect", target=Target.DATABASE)
@retry_pg("check.postgres_connect")  # lost connection: reconnect and ask again
def postgres_connect(ctx: RunContext, params: NoParams) -> CheckResult:
    """The database accepts connections and answers a query."""
    with ctx.db.connect() as conn:
        row = conn.execute("SELECT 1, current_setting('server_version'), pg_is_in_recovery()").fetchone()
    assert row is not None
    ok = row[0] == 1 and not row[2]
    return CheckResult(name="postgres_connect", status=verdict(ok),
                       observed=f"answered, PostgreSQL {row[1]}" + (" (read-only replica)" if row[2] else ""),
                       expected="answers and is a primary", evidence={"server_version": row[1], "in_recovery": row[2]})


# -- replication ------------------------------------------------------------------------------------
class ReplicationParams(_Params):
    max_lag: Duration = Field(timedelta(seconds=30), description="replay lag ceiling per replica")
    min_replicas: int = Field(0, ge=0, description="fail when fewer replicas are streaming")


@check("replication_lag", params=ReplicationParams, target=Target.DATABASE)
@retry_pg("check.replication_lag")  # lost connection: reconnect and ask again
def replication_lag(ctx: RunContext, params: ReplicationParams) -> CheckResult:
    """Replicas stream and their replay lag is under a ceiling (on a replica: its own lag)."""
    ceiling = params.max_lag.total_seconds()
    with ctx.db.connect() as conn:
        row = conn.execute("SELECT pg_is_in_recovery(), EXTRACT(epoch FROM now() - "
                           "pg_last_xact_replay_timestamp())").fetchone()
        assert row is not None
        if row[0]:  # connected to a replica: its own lag
            lag = float(row[1]) if row[1] is not None else None
            ok = lag is not None and lag <= ceiling
            return CheckResult(name="replication_lag", status=verdict(ok), observed=f"replica lag {lag}s",
                               expected=f"<= {ceiling:g}s", evidence={"role": "replica", "lag_s": lag})
        rows = conn.execute("SELECT application_name, client_addr::text, state, "
                            "COALESCE(EXTRACT(epoch FROM replay_lag), 0) FROM pg_stat_replication").fetchall()
    replicas = [{"name": r[0], "address": r[1], "state": r[2], "lag_s": float(r[3])} for r in rows]
    behind = [r for r in replicas if r["lag_s"] > ceiling or r["state"] != "streaming"]
    ok = not behind and len(replicas) >= params.min_replicas
    worst = max((r["lag_s"] for r in replicas), default=0.0)
    return CheckResult(name="replication_lag", status=verdict(ok),
                       observed=f"{len(replicas)} replica(s), worst lag {worst:g}s",
                       expected=f">= {params.min_replicas} streaming replica(s), lag <= {ceiling:g}s",
                       evidence={"role": "primary", "replicas": replicas, "differences": behind or None})


# -- sessions ---------------------------------------------------------------------------------------
class SessionsParams(_Params):
    max_running: Duration = Field(timedelta(minutes=5), description="longest allowed active query")
    max_idle_in_transaction: Duration = Field(timedelta(minutes=1))
    allowed: int = Field(0, ge=0, description="how many offending sessions are tolerated")
    ignore_applications: list[str] = Field(default_factory=list)


SESSIONS = """
SELECT pid, usename, application_name, datname, state,
       EXTRACT(epoch FROM now() - CASE WHEN state = 'active' THEN query_start ELSE state_change END)
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND ((state = 'active' AND now() - query_start > %s)
    OR (state IN ('idle in transaction', 'idle in transaction (aborted)') AND now() - state_change > %s))
  AND NOT (application_name = ANY(%s))
ORDER BY 6 DESC
"""


@check("sessions", params=SessionsParams, target=Target.DATABASE)
@retry_pg("check.sessions")  # lost connection: reconnect and ask again
def sessions(ctx: RunContext, params: SessionsParams) -> CheckResult:
    """No long-running or idle-in-transaction sessions over their limits."""
    with ctx.db.connect(autocommit=True) as conn:
        rows = conn.execute(SESSIONS, [params.max_running, params.max_idle_in_transaction,
                                       params.ignore_applications]).fetchall()
    found = [{"pid": r[0], "user": r[1], "application": r[2], "database": r[3], "state": r[4],
              "seconds": round(float(r[5]), 1)} for r in rows]
    ok = len(found) <= params.allowed
    return CheckResult(name="sessions", status=verdict(ok), observed=f"{len(found)} offending session(s)",
                       expected=f"<= {params.allowed} (active > {params.max_running.total_seconds():g}s or idle "
                                f"in transaction > {params.max_idle_in_transaction.total_seconds():g}s)",
                       evidence={"sessions": found[:50], "differences": found[:50] if not ok else None})


# -- indexes ----------------------------------------------------------------------------------------
INVALID_INDEXES = """
SELECT n.nspname, c.relname, t.relname FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT i.indisvalid OR NOT i.indisready ORDER BY 1, 2
"""


@check("invalid_indexes", target=Target.DATABASE)
@retry_pg("check.invalid_indexes")  # lost connection: reconnect and ask again
def invalid_indexes(ctx: RunContext, params: NoParams) -> CheckResult:
    """No invalid indexes (left behind by a failed CREATE/REINDEX ... CONCURRENTLY)."""
    with ctx.db.connect(autocommit=True) as conn:
        rows = conn.execute(INVALID_INDEXES).fetchall()
    found = [{"index": f"{r[0]}.{r[1]}", "table": f"{r[0]}.{r[2]}"} for r in rows]
    return CheckResult(name="invalid_indexes", status=verdict(not found), observed=f"{len(found)} invalid index(es)",
                       expected="0 invalid indexes", evidence={"invalid": found, "differences": found or None})


# -- custom read-only SQL assertion -----------------------------------------------------------------
class SqlAssertParams(_Params):
    sql: str = Field(min_length=1, description="one read-only statement")
    description: str = ""
    expect_rows: int | None = Field(None, ge=0, description="number of rows the query must return")
    expect_scalar: str | int | float | bool | None = Field(None, description="value of the first column of row 1")
    op: Literal["==", "!=", "<", "<=", ">", ">="] = "=="
    statement_timeout: Duration = Field(timedelta(seconds=30))

    @model_validator(mode="after")
    def _one_expectation(self) -> SqlAssertParams:
        if (self.expect_rows is None) == (self.expect_scalar is None):
            raise ValueError("set exactly one of expect_rows or expect_scalar")
        return self


def _coerce(value: Any, like: Any) -> Any:
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(like, bool) or value is None:
        return value
    if isinstance(like, int | float) and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(like, str) and not isinstance(value, str):
        return str(value)
    return value


# generic: READ ONLY stops writes in this transaction, not a function with side effects elsewhere
# (pg_terminate_backend, dblink_exec): the runbook says whether its query destroys anything
@check("sql_assert", params=SqlAssertParams, target=Target.DATABASE, generic=True)
@retry_pg("check.sql_assert")  # lost connection: reconnect and ask again
def sql_assert(ctx: RunContext, params: SqlAssertParams) -> CheckResult:
    """A custom SQL query, run read-only with a timeout, returns the expected rows or value."""
    timeout_ms = int(params.statement_timeout.total_seconds() * 1000)
    with ctx.db.connect() as conn:
        conn.read_only = True  # BEGIN READ ONLY
        try:
            conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(f"{timeout_ms}ms")))
            cur = conn.execute(params.sql, prepare=True)  # prepared: exactly one statement
            rows = cur.fetchall() if cur.description else []
        finally:
            conn.rollback()
    label = params.description or params.sql.strip().splitlines()[0][:80]
    if params.expect_rows is not None:
        ok = OPS[params.op](len(rows), params.expect_rows)
        observed: Any = f"{len(rows)} row(s)"
        expected: Any = f"rows {params.op} {params.expect_rows}"
    else:
        value = _coerce(rows[0][0], params.expect_scalar) if rows else None
        try:
            ok = value is not None and OPS[params.op](value, params.expect_scalar)
        except TypeError:
            ok = False
        observed, expected = value, f"{params.op} {params.expect_scalar!r}"
    sample = [[str(v) for v in r] for r in rows[:5]]
    return CheckResult(name="sql_assert", status=CheckStatus.PASS if ok else CheckStatus.FAIL, observed=observed,
                       expected=expected, evidence={"query": label, "rows": len(rows), "sample": sample,
                                                    "read_only": True, "statement_timeout_ms": timeout_ms})
