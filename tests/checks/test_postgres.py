"""PostgreSQL checks against the real embedded server."""

from __future__ import annotations

import psycopg
import pytest

from pitstop.model import CheckStatus

from .conftest import run


def test_connect_and_replication_without_replicas(ctx):
    assert run(ctx, "postgres_connect").status == CheckStatus.PASS
    r = run(ctx, "replication_lag", {"max_lag": "30s"})
    assert r.status == CheckStatus.PASS and r.evidence["role"] == "primary" and r.evidence["replicas"] == []
    r = run(ctx, "replication_lag", {"min_replicas": 1})
    assert r.status == CheckStatus.FAIL and "0 replica(s)" in r.observed


def test_idle_in_transaction_session_is_found(ctx, db_conn, seeded_db):
    with psycopg.connect(**{**ctx.db.conninfo(), "application_name": "stuck-worker"}) as stuck:
        stuck.execute("SELECT count(*) FROM users").fetchone()  # opens a transaction and leaves it idle
        r = run(ctx, "sessions", {"max_idle_in_transaction": "0s", "max_running": "1h"})
        assert r.status == CheckStatus.FAIL
        found = r.evidence["sessions"]
        assert any(s["application"] == "stuck-worker" and s["state"] == "idle in transaction" for s in found)
        ignored = run(ctx, "sessions", {"max_idle_in_transaction": "0s", "ignore_applications": ["stuck-worker"]})
        assert ignored.status == CheckStatus.PASS
    assert run(ctx, "sessions", {"max_idle_in_transaction": "0s"}).status == CheckStatus.PASS


def test_invalid_index_is_found(ctx, db_conn, seeded_db):
    with db_conn(seeded_db) as conn:
        assert run(ctx, "invalid_indexes").status == CheckStatus.PASS
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY orders_user_uniq ON orders (user_id)")
    r = run(ctx, "invalid_indexes")
    assert r.status == CheckStatus.FAIL
    assert r.evidence["invalid"] == [{"index": "public.orders_user_uniq", "table": "public.orders"}]


def test_sql_assert_scalar_and_rows(ctx):
    r = run(ctx, "sql_assert", {"sql": "SELECT count(*) FROM users", "expect_scalar": 200})
    assert r.status == CheckStatus.PASS and r.observed == 200
    r = run(ctx, "sql_assert", {"sql": "SELECT count(*) FROM users", "expect_scalar": 100, "op": ">="})
    assert r.status == CheckStatus.PASS
    r = run(ctx, "sql_assert", {"sql": "SELECT id FROM users WHERE id <= 3", "expect_rows": 3})
    assert r.status == CheckStatus.PASS and r.evidence["rows"] == 3 and r.evidence["read_only"] is True
    r = run(ctx, "sql_assert", {"sql": "SELECT sum(amount_cents) FROM orders", "expect_scalar": 1})
    assert r.status == CheckStatus.FAIL and r.observed > 1


def test_sql_assert_cannot_write(ctx, db_conn, seeded_db):
    for statement in ("DELETE FROM users", "COMMIT; DELETE FROM users", "SELECT 1; DELETE FROM users",
                      "UPDATE orders SET amount_cents = 0"):
        r = run(ctx, "sql_assert", {"sql": statement, "expect_rows": 0})
        assert r.status == CheckStatus.FAIL, statement
        assert "error" in r.evidence, statement
    with db_conn(seeded_db) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 200
        assert conn.execute("SELECT min(amount_cents) FROM orders").fetchone()[0] > 0


def test_sql_assert_statement_timeout(ctx):
    r = run(ctx, "sql_assert", {"sql": "SELECT pg_sleep(10)", "expect_rows": 1, "statement_timeout": "0.2s"})
    assert r.status == CheckStatus.FAIL
    assert "statement timeout" in r.evidence["error"]


def test_sql_assert_needs_one_expectation():
    from pydantic import ValidationError

    from pitstop.checks.postgres import SqlAssertParams

    with pytest.raises(ValidationError):
        SqlAssertParams(sql="SELECT 1")
    with pytest.raises(ValidationError):
        SqlAssertParams(sql="SELECT 1", expect_rows=1, expect_scalar=1)
