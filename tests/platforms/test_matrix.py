"""The platform matrix: every database shape of shapes.sql on PostgreSQL 13-18, through the real CLI.

Per server version: seed the shapes once, then ``pitstop run`` (backup → restore-verify → retention
purge → vacuum → post-check), ``pitstop restore --into`` (every leaf table's count and checksum, the
sequences and large objects equal to the source before the purge), and the purge's result (exactly
the expired rows gone, computed independently in SQL before the run). Where no pg_dump new enough
exists on this machine (PostgreSQL 17 and 18: the client tools here are 15 and 16), the run must be
refused with exit 2 before anything changes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from pitstop.connectors.pgtools import client_major, known_dirs
from tests.conftest import ROOT, report_of, run_cli

from .conftest import PgServer

SHAPES = (Path(__file__).parent / "shapes.sql").read_text()
RULES = [
    {"table": "audit_log", "column": "at", "older_than": "395d", "partitions": "drop_only", "max_share": 0.9},
    {"table": "visits", "column": "at", "older_than": "90d", "max_share": 0.9},
    {"table": "shipments", "column": "at", "older_than": "30d", "max_share": 0.95},
    {"table": "hashed", "column": "at", "older_than": "60d", "max_share": 0.9},
    {"schema": "Mixed Schema", "table": "Odd Table", "column": "Created At", "older_than": "45d", "max_share": 0.9},
    {"table": "orders", "column": "created_at", "older_than": "90d", "max_share": 0.9},
    {"table": "raw_log", "column": "at", "older_than": "30d", "max_share": 0.9},
]
# survivors of each rule, as SQL computed before the run (drop_only: every row of a leaf that stays)
SURVIVORS = {
    "audit_log": "tableoid::regclass::text <> ALL(%(gone)s)",
    "visits": "at >= now() - interval '90 days'",
    "shipments": "at >= now() - interval '30 days'",
    "hashed": "at >= now() - interval '60 days'",
    '"Mixed Schema"."Odd Table"': "\"Created At\" >= now() - interval '45 days'",
    "orders": "created_at >= now() - interval '90 days'",
    "raw_log": "at >= now() - interval '30 days'",
}
LEAF_TABLES = """SELECT format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
  AND c.relname NOT LIKE 'pitstop%' ORDER BY 1"""
RUNBOOK = {"name": "matrix", "kind": "monthly", "stages": [
    {"name": "preflight", "steps": [{"uses": "check.postgres_connect"}]},
    {"name": "pre-backup", "steps": [{"uses": "backup.postgres"}, {"uses": "backup.verify"}]},
    {"name": "database-cleanup", "steps": [{"uses": "cleanup.retention"}, {"uses": "database.vacuum_analyze"}]},
    {"name": "post-verification", "steps": [{"uses": "check.postgres_connect"}]}]}


def fingerprint(conn: psycopg.Connection, table: str, where: str = "true", args: dict[str, Any] | None = None
                ) -> tuple[int, str]:
    row = conn.execute(f"SELECT count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') "  # noqa: S608
                       f"FROM {table} x WHERE {where}", args or {}).fetchone()
    return int(row[0]), str(row[1])


def state(conn: psycopg.Connection) -> dict[str, Any]:
    """Every leaf table's count and checksum, the sequences' positions and the large objects."""
    conn.execute("SET row_security = off")
    out: dict[str, Any] = {t: fingerprint(conn, t) for (t,) in conn.execute(LEAF_TABLES).fetchall()}
    out["sequences"] = conn.execute("SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences "
                                    "ORDER BY 1").fetchall()
    out["large objects"] = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0]
    out["matview rows"] = conn.execute("SELECT count(*) FROM audit_per_month").fetchone()[0]
    return out


def matching_client(major: int) -> bool:
    return any((m := client_major(d)) is not None and m >= major for d in known_dirs())


@pytest.fixture(scope="session")
def shaped(pg_version_server: PgServer) -> tuple[PgServer, str]:
    """The shapes, seeded once per server."""
    dbname = "shapes"
    with pg_version_server.connect() as admin:
        admin.execute(f"CREATE DATABASE {dbname}")
    with pg_version_server.connect(dbname) as conn:
        conn.execute(SHAPES)
    return pg_version_server, dbname


def _env(server: PgServer, dbname: str, tmp_path: Path) -> Path:
    from pitstop.config import load_config
    from pitstop.demo import setup_hosts

    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg.update(name=f"pg{server.major}", state_dir=str(tmp_path / "state"), retention=RULES)
    cfg["database"] = {"host": server.sockdir, "port": server.port, "dbname": dbname, "user": "postgres"}
    cfg.get("schedules", {}).pop("blackouts", None)
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    setup_hosts(load_config(str(path)))
    return path


def test_shapes_survive_backup_restore_and_purge(shaped: tuple[PgServer, str], tmp_path: Path) -> None:
    server, dbname = shaped
    env = _env(server, dbname, tmp_path)
    rb = tmp_path / "matrix.yaml"
    rb.write_text(yaml.safe_dump(RUNBOOK, sort_keys=False))
    with server.connect(dbname) as conn:
        before = state(conn)
        gone = [r[0] for r in conn.execute(
            "SELECT c.oid::regclass::text FROM pg_partition_tree('audit_log') t JOIN pg_class c ON c.oid = t.relid "
            "WHERE t.isleaf AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT' AND (regexp_match(pg_get_expr("
            "c.relpartbound, c.oid), 'TO \\(''(.*)''\\)'))[1]::timestamptz <= now() - interval '395 days'")]
        assert len(gone) >= 2
        survivors = {t: fingerprint(conn, t, w, {"gone": gone}) for t, w in SURVIVORS.items()}
        lines_left = conn.execute("SELECT count(*) FROM order_lines l JOIN orders o ON o.id = l.order_id "
                                  "WHERE o.created_at >= now() - interval '90 days'").fetchone()[0]
    res = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    if not matching_client(server.major):
        # no pg_dump >= the server here: refused before anything changes, naming both versions and the fix
        assert res.returncode == 2, res.stdout + res.stderr
        flat = " ".join(res.stderr.split())
        assert f"needs pg_dump/pg_restore {server.major}" in flat and "pg_bin_dir" in flat, flat
        assert "Traceback" not in res.stderr
        assert not (tmp_path / "state" / "runs").exists() or not list((tmp_path / "state" / "runs").iterdir())
        with server.connect(dbname) as conn:
            assert state(conn) == before
        return
    assert res.returncode == 0, res.stdout + res.stderr
    report = report_of(res.stdout)
    assert report["status"] == "succeeded" and report["backup"]["verified"] is True
    with server.connect(dbname) as conn:
        after = {t: fingerprint(conn, t) for t in SURVIVORS}
        assert after == survivors
        assert conn.execute("SELECT count(*) FROM order_lines").fetchone()[0] == lines_left
        assert conn.execute("SELECT count(*) FROM order_notes").fetchone()[0] == 900
        assert conn.execute("SELECT count(*) FROM audit_log WHERE at < now() - interval '395 days'").fetchone()[0] > 0
        assert {"audit_log_default", "shipments_cur_d_early", "visits_rest"} <= {
            r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relkind = 'r'").fetchall()}
    target = f"restored_{server.major}"
    out = run_cli("restore", "--env", str(env), "--run", report["run_id"], "--into", target, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["differences"] == []
    with server.connect(target) as conn:
        assert state(conn) == before
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'Odd Table'").fetchone()[0]
        assert owner == "postgres"  # restored with --no-owner: the restoring role owns it (docs/platforms.md)
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'orders_touch'").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM recent_orders").fetchone()[0] > 0
