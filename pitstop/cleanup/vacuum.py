"""Space and statistics: VACUUM (ANALYZE), REINDEX CONCURRENTLY of bloated indexes, invalid-index
detection, and the exclusive VACUUM FULL / CLUSTER (only as its own step, inside the window).

VACUUM and REINDEX CONCURRENTLY cannot run inside a transaction block: they use an autocommit
connection with ``lock_timeout`` set for the session (REINDEX CONCURRENTLY takes a SHARE UPDATE
EXCLUSIVE lock and waits for older transactions; VACUUM only SHARE UPDATE EXCLUSIVE).
"""

from __future__ import annotations

import time
from typing import Any

from psycopg import errors as pg_errors
from psycopg import sql

from ..context import RunContext
from ..pgretry import call
from . import metrics


def split(name: str) -> tuple[str, str]:
    schema, _, table = name.rpartition(".")
    return schema or "public", table


def _session(ctx: RunContext, lock_timeout_ms: int) -> Any:
    conn = ctx.db.connect(autocommit=True)
    conn.execute("SELECT set_config('lock_timeout', %s, false)", [f"{lock_timeout_ms}ms"])
    return conn


def vacuum_tables(ctx: RunContext, names: list[str], lock_timeout_ms: int, retries: int = 20) -> list[dict[str, Any]]:
    """VACUUM (ANALYZE) each table; a lost connection redoes that table only (pitstop.pgretry)."""
    return [call(ctx, f"vacuum {name}", _vacuum_one, ctx, name, lock_timeout_ms, retries) for name in names]


def _vacuum_one(ctx: RunContext, name: str, lock_timeout_ms: int, retries: int) -> dict[str, Any]:
    with _session(ctx, lock_timeout_ms) as conn:
        schema, table = split(name)
        before = metrics.table_stats(conn, schema, table)
        t0 = time.monotonic()
        stmt = sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(schema, table))
        attempts = _retry(lambda: conn.execute(stmt), retries)
        after = metrics.table_stats(conn, schema, table)
    entry = {"table": f"{schema}.{table}", "duration_s": round(time.monotonic() - t0, 3),
             "attempts": attempts, "before": before, "after": after}
    ctx.event("cleanup.vacuumed", **entry)
    return entry


def reindex_bloated(ctx: RunContext, names: list[str], threshold: float, min_bytes: int, lock_timeout_ms: int,
                    dry_run: bool = False) -> list[dict[str, Any]]:
    """REINDEX CONCURRENTLY every valid index of ``names`` whose bloat estimate exceeds ``threshold``."""
    out = []
    with _session(ctx, lock_timeout_ms) as conn:
        for name in names:
            schema, table = split(name)
            for ix in metrics.index_stats(conn, schema, table):
                bloat = ix["bloat_estimate"]
                if not ix["valid"] or bloat is None or bloat <= threshold or ix["bytes"] < min_bytes:
                    continue
                entry: dict[str, Any] = {"table": f"{schema}.{table}", "index": ix["index"],
                                         "bytes_before": ix["bytes"], "bloat_before": bloat}
                if not dry_run:
                    ix_schema, ix_name = _index_name(conn, ix["index"])
                    t0 = time.monotonic()
                    _retry(lambda s=ix_schema, n=ix_name: conn.execute(sql.SQL("REINDEX INDEX CONCURRENTLY {}")
                                                                      .format(sql.Identifier(s, n))), 20)
                    entry["duration_s"] = round(time.monotonic() - t0, 3)
                    entry["bytes_after"] = int(conn.execute("SELECT pg_relation_size(c.oid) FROM pg_class c JOIN "
                                                            "pg_namespace n ON n.oid = c.relnamespace WHERE "
                                                            "n.nspname = %s AND c.relname = %s",
                                                            [ix_schema, ix_name]).fetchone()[0])
                    ctx.event("cleanup.reindexed", **entry)
                out.append(entry)
    return out


def _index_name(conn: Any, regclass_text: str) -> tuple[str, str]:
    row = conn.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE c.oid = %s::regclass", [regclass_text]).fetchone()
    return str(row[0]), str(row[1])


def report_invalid(ctx: RunContext) -> list[str]:
    def ask() -> list[str]:
        with ctx.db.connect() as conn:
            return list(metrics.invalid_indexes(conn))

    bad = call(ctx, "invalid_indexes", ask)
    if bad:
        ctx.event("cleanup.invalid_indexes", indexes=bad,
                  hint="an interrupted CREATE/REINDEX CONCURRENTLY leaves these; drop and recreate them")
    return bad


def vacuum_full(ctx: RunContext, names: list[str], mode: str, index: str | None) -> list[dict[str, Any]]:
    """VACUUM FULL or CLUSTER: ACCESS EXCLUSIVE for the whole rewrite, so only inside the window."""
    done = []
    with ctx.db.connect(autocommit=True) as conn:
        for name in names:
            schema, table = split(name)
            before = metrics.table_stats(conn, schema, table)
            t0 = time.monotonic()
            tbl = sql.Identifier(schema, table)
            if mode == "cluster":
                stmt = sql.SQL("CLUSTER {} USING {}").format(tbl, sql.Identifier(index)) if index \
                    else sql.SQL("CLUSTER {}").format(tbl)
            else:
                stmt = sql.SQL("VACUUM (FULL, ANALYZE) {}").format(tbl)
            conn.execute(stmt)
            entry = {"table": f"{schema}.{table}", "mode": mode, "duration_s": round(time.monotonic() - t0, 3),
                     "before": before, "after": metrics.table_stats(conn, schema, table)}
            ctx.event("cleanup.rewritten", **entry)
            done.append(entry)
    return done


def _retry(fn: Any, retries: int) -> int:
    for attempt in range(1, retries + 2):
        try:
            fn()
            return attempt
        except pg_errors.LockNotAvailable:
            if attempt > retries:
                raise
            time.sleep(min(2.0, 0.05 * 2 ** attempt))
    return retries + 1
