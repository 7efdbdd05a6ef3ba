"""Cleanup fixtures: a RunContext on a per-test database, and tables built for exact accounting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pitstop.config import load_config
from pitstop.context import RunContext, RunOptions
from pitstop.runbook import load_runbook

# 20,000 rows; every 4th row is 120-169 days old, the rest 0-59 days: with `older_than: 90d`
# exactly 5,000 rows expire whatever the time of day.
ROWS, EXPIRED = 20000, 5000
EV_TABLE = """
CREATE TABLE ev (
    id         bigserial PRIMARY KEY,
    account    int NOT NULL,
    kind       text NOT NULL,
    payload    text,
    created_at timestamptz NOT NULL
);
CREATE INDEX ev_created_at_idx ON ev (created_at);
CREATE INDEX ev_account_created_idx ON ev (account, created_at);
INSERT INTO ev (account, kind, payload, created_at)
SELECT g % 97, (ARRAY['view', 'click'])[1 + g % 2], 'p,"' || g || E'"\\nline',
       now() - make_interval(days => CASE WHEN g % 4 = 0 THEN 120 + g % 50 ELSE g % 60 END, secs => g % 3600)
FROM generate_series(1, ROWS_N) g;
"""
NOPK_TABLE = """
CREATE TABLE audit_log (msg text, at timestamptz NOT NULL);
INSERT INTO audit_log SELECT 'm' || g, now() - make_interval(days => CASE WHEN g % 4 = 0 THEN 120 ELSE 10 END)
FROM generate_series(1, ROWS_N) g;
"""


def rule(table: str, **extra: Any) -> dict[str, Any]:
    return {"table": table, "column": extra.pop("column", "created_at"), "older_than": "90d", **extra}


@pytest.fixture
def conn(db_conn: Callable[[str], psycopg.Connection], seeded_db: str) -> psycopg.Connection:
    c = db_conn(seeded_db)
    yield c
    c.close()


@pytest.fixture
def ev(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute(EV_TABLE.replace("ROWS_N", str(ROWS)))
    conn.execute("ANALYZE ev")
    return conn


@pytest.fixture
def cleanup_ctx(make_env: Callable[..., Path]) -> Callable[..., RunContext]:
    """``cleanup_ctx(rules, cleanup=None, run_id=None)``: a RunContext whose config has these rules."""

    def make(rules: list[dict[str, Any]], cleanup: dict[str, Any] | None = None, run_id: str | None = None,
             name: str = "env.yaml") -> RunContext:
        def mutate(cfg: dict[str, Any]) -> None:
            cfg["retention"] = rules
            if cleanup:
                cfg["cleanup"] = cleanup

        path = make_env(mutate, name=name)
        cfg = load_config(str(path))
        return RunContext.create(cfg, load_runbook("monthly", cfg), RunOptions(), run_id=run_id)

    return make


def fingerprint(conn: psycopg.Connection, table: str, where: str = "true") -> tuple[int, str]:
    """Count and checksum of the rows matching ``where`` (test-owned SQL text)."""
    row = conn.execute(f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "  # noqa: S608
                       f"FROM {table} t WHERE {where}").fetchone()
    return int(row[0]), str(row[1])


def events(ctx: RunContext, kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in ctx.audit.events if e["kind"] == kind]
