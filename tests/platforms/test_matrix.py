"""The platform matrix: every database shape of shapes.sql on PostgreSQL 13-18, through the real CLI.

Per server version, on the shapes seeded once: ``pitstop plan`` (exactly the leaves that go, with their
rows), ``pitstop run`` (data snapshot → backup → restore-verify → retention purge → vacuum → data parity
and index checks), the purge's result (exactly the expired rows gone, computed independently in SQL
before the run), ``pitstop restore --into`` with and without owners (every leaf table's count and
checksum, sequences, large objects, materialized views, types, policies equal to the source before the
purge), and a purge a RESTRICT foreign key blocks (refused whole, nothing deleted).

Client tools: servers 13-16 use the machine's (Debian 15, the pgserver wheel's 16), chosen by pitstop
itself; servers 17 and 18 have no pg_dump new enough there, so their config names the 17/18 client
tools that scripts/ensure-pg-versions.sh unpacks (test_client_tools.py proves the refusal without them).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
import yaml

from pitstop.connectors.pgtools import client_major, known_dirs
from tests.conftest import ROOT, report_of, run_cli

from .conftest import CLIENTS, PgServer, missing

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
    "public.audit_log": "tableoid::regclass::text <> ALL(%(gone)s)",
    "public.visits": "at >= now() - interval '90 days'",
    "public.shipments": "at >= now() - interval '30 days'",
    "public.hashed": "at >= now() - interval '60 days'",
    'Mixed Schema.Odd Table': "\"Created At\" >= now() - interval '45 days'",
    "public.orders": "created_at >= now() - interval '90 days'",
    "public.raw_log": "at >= now() - interval '30 days'",
}
SQL_NAME = {"Mixed Schema.Odd Table": '"Mixed Schema"."Odd Table"'}
LEAF_TABLES = """SELECT format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
  AND c.relname NOT LIKE 'pitstop%' ORDER BY 1"""
# the leaves of audit_log whose upper bound is at or before the cutoff (from the catalog, not the names)
GOING_LEAVES = """SELECT c.oid::regclass::text, n.nspname || '.' || c.relname
FROM pg_partition_tree('audit_log') t JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE t.isleaf AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT' AND (regexp_match(pg_get_expr(c.relpartbound,
  c.oid), 'TO \\(''(.*)''\\)'))[1]::timestamptz <= now() - interval '395 days' ORDER BY 2"""
RUNBOOK = {"name": "matrix", "kind": "monthly", "stages": [
    {"name": "preflight", "steps": [{"uses": "check.postgres_connect"}, {"uses": "check.data_snapshot"}]},
    {"name": "pre-backup", "steps": [{"uses": "backup.postgres"}, {"uses": "backup.verify"}]},
    {"name": "database-cleanup", "steps": [{"uses": "cleanup.retention"}, {"uses": "database.vacuum_analyze"}]},
    {"name": "post-verification", "steps": [{"uses": "check.postgres_connect"}, {"uses": "check.data_parity"},
                                            {"uses": "check.invalid_indexes"}]}]}
PURGE_ONLY = {"name": "blocked", "kind": "custom", "stages": [
    {"name": "database-cleanup", "steps": [{"uses": "cleanup.retention"}]}]}


def fingerprint(conn: psycopg.Connection, table: str, where: str = "true", args: dict[str, Any] | None = None
                ) -> tuple[int, str]:
    row = conn.execute(f"SELECT count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') "  # noqa: S608
                       f"FROM {table} x WHERE {where}", args or {}).fetchone()
    return int(row[0]), str(row[1])


def state(conn: psycopg.Connection) -> dict[str, Any]:
    """Every leaf table's count and checksum, the sequences' positions, large objects, types, policies."""
    conn.execute("SET row_security = off")
    out: dict[str, Any] = {t: fingerprint(conn, t) for (t,) in conn.execute(LEAF_TABLES).fetchall()}
    one = {
        "sequences": "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences ORDER BY 1",
        "large objects": "SELECT md5(string_agg(lo_get(oid)::text, '|' ORDER BY lo_get(oid)::text)), count(*) "
                         "FROM pg_largeobject_metadata",
        "matview rows": "SELECT count(*), sum(n) FROM audit_per_month",
        "enum": "SELECT enum_range(NULL::mood)::text",
        "domain": "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contypid = 'positive_int'::regtype",
        "generated": "SELECT attname, attgenerated FROM pg_attribute WHERE attrelid = '\"Mixed Schema\".\"Odd Table\"'"
                     "::regclass AND attgenerated <> ''",
        "identity": "SELECT attrelid::regclass::text, attname, attidentity FROM pg_attribute WHERE attidentity <> '' "
                    "AND attrelid::regclass::text NOT LIKE '%%pitstop%%' ORDER BY 1, 2",
        "rls": "SELECT relrowsecurity, relforcerowsecurity, (SELECT count(*) FROM pg_policy WHERE polrelid = c.oid) "
               "FROM pg_class c WHERE oid = 'secrets_rls'::regclass",
        "unlogged": "SELECT relpersistence FROM pg_class WHERE oid = 'cache_entries'::regclass",
        "extension": "SELECT extname FROM pg_extension WHERE extname = 'hstore'",
        "triggers": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1",
        "views": "SELECT relname, relkind FROM pg_class WHERE relkind IN ('v', 'm') AND relnamespace = "
                 "'public'::regnamespace ORDER BY 1",
    }
    for key, query in one.items():
        out[key] = conn.execute(query).fetchall()
    return out


def fitting_client(major: int) -> Path | None:
    """The machine's client directory pitstop would choose for this server, if any."""
    fits = sorted((m, str(d)) for d in known_dirs() if (m := client_major(d)) is not None and m >= major)
    return Path(fits[0][1]) if fits else None


def write_env(server: PgServer, dbname: str, tmp_path: Path, rules: list[dict[str, Any]] = RULES,
              pg_bin_dir: Path | None = None) -> Path:
    from pitstop.config import load_config
    from pitstop.demo import setup_hosts

    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg.update(name=f"pg{server.major}", state_dir=str(tmp_path / "state"), retention=rules)
    cfg["database"] = {"host": server.sockdir, "port": server.port, "dbname": dbname, "user": "postgres"}
    if pg_bin_dir is not None:
        cfg["database"]["pg_bin_dir"] = str(pg_bin_dir)
    cfg.get("schedules", {}).pop("blackouts", None)
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    setup_hosts(load_config(str(path)))
    return path


def client_bin_dir(major: int) -> Path | None:
    """None when pitstop finds a client itself; else the 17/18 client tools unpacked for the matrix."""
    if fitting_client(major) is not None:
        return None
    bin_dir = CLIENTS / str(major) / "bin"
    if not (bin_dir / "pg_dump").is_file():
        missing(f"no pg_dump {major} in {bin_dir}")
    return bin_dir


def plan_rows(would: list[str]) -> tuple[dict[str, int], dict[str, int], list[str]]:
    """From the retention step's plan lines: rows each rule would purge, rows of each dropped leaf, and the
    drop_only notes."""
    headline = re.compile(r"^(\S.*?): purge (\d+) of (\d+) rows")
    leaf = re.compile(r"^\s+drop partition (.+?) \((\d+) rows")
    purge = {m.group(1): int(m.group(2)) for line in would if (m := headline.match(line))}
    leaves = {m.group(1): int(m.group(2)) for line in would if (m := leaf.match(line))}
    return purge, leaves, [line for line in would if "drop_only:" in line]


def test_shapes_survive_backup_restore_and_purge(shaped: tuple[PgServer, str], tmp_path: Path) -> None:
    server, dbname = shaped
    env = write_env(server, dbname, tmp_path, pg_bin_dir=client_bin_dir(server.major))
    rb = tmp_path / "matrix.yaml"
    rb.write_text(yaml.safe_dump(RUNBOOK, sort_keys=False))
    with server.connect(dbname) as conn:
        before = state(conn)
        going = conn.execute(GOING_LEAVES).fetchall()
        gone = [r[0] for r in going]
        assert len(gone) >= 2
        totals = {t: fingerprint(conn, SQL_NAME.get(t, t))[0] for t in SURVIVORS}
        survivors = {t: fingerprint(conn, SQL_NAME.get(t, t), w, {"gone": gone}) for t, w in SURVIVORS.items()}
        leaf_rows = {name: fingerprint(conn, regclass)[0] for regclass, name in going}
        expired_kept = conn.execute("SELECT count(*) FROM audit_log WHERE at < now() - interval '395 days' AND "
                                    "tableoid::regclass::text <> ALL(%s)", (gone,)).fetchone()[0]
        lines_left = conn.execute("SELECT count(*) FROM order_lines l JOIN orders o ON o.id = l.order_id "
                                  "WHERE o.created_at >= now() - interval '90 days'").fetchone()[0]
        notes_nulled = conn.execute("SELECT count(*) FROM order_notes n JOIN orders o ON o.id = n.order_id "
                                    "WHERE o.created_at < now() - interval '90 days'").fetchone()[0]

    # plan: which leaves go, with their rows, and how many rows each rule purges; nothing changes
    res = run_cli("plan", "--env", str(env), "--runbook", str(rb), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    would = next(s["would"] for s in json.loads(res.stdout)["steps"] if s["uses"] == "cleanup.retention")
    purge, leaves, notes = plan_rows(would)
    audit_leaves = {k: v for k, v in leaves.items() if "audit_log" in k}
    assert audit_leaves == leaf_rows, would  # exactly the leaves past the cutoff; never the DEFAULT
    assert any(f"{expired_kept} expired row(s) in partitions that stay are kept" in n for n in notes), would
    for table in SURVIVORS:
        if table != "public.audit_log":
            assert purge[table] == totals[table] - survivors[table][0], (table, would)
    with server.connect(dbname) as conn:
        assert state(conn) == before

    # run: backup, verify, purge, post-verification
    res = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    report = report_of(res.stdout)
    assert report["status"] == "succeeded" and report["backup"]["verified"] is True, report.get("error")
    with server.connect(dbname) as conn:
        after = {t: fingerprint(conn, SQL_NAME.get(t, t)) for t in SURVIVORS}
        assert after == survivors
        assert conn.execute("SELECT count(*) FROM order_lines").fetchone()[0] == lines_left  # CASCADE
        assert conn.execute("SELECT count(*) FROM order_notes").fetchone()[0] == 900  # SET NULL keeps them
        assert conn.execute("SELECT count(*) FROM order_notes WHERE order_id IS NULL").fetchone()[0] == notes_nulled
        assert conn.execute("SELECT count(*) FROM order_audit").fetchone()[0] == 600  # RESTRICT: none referenced
        assert conn.execute("SELECT count(*) FROM audit_log WHERE at < now() - interval '395 days'").fetchone()[0] \
            == expired_kept > 0
        assert {"audit_log_default", "shipments_cur_d_early", "visits_rest"} <= {
            r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relkind = 'r'").fetchall()}
        assert not conn.execute("SELECT 1 FROM pg_class WHERE oid::regclass::text = ANY(%s)", (gone,)).fetchall()

    # restore --into: the dump holds the database as it was before the purge (restoring role owns it)
    target = f"restored_{server.major}"
    out = run_cli("restore", "--env", str(env), "--run", report["run_id"], "--into", target, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["differences"] == []
    with server.connect(target) as conn:
        assert state(conn) == before
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'Odd Table'").fetchone()[0]
        assert owner == "postgres"  # --no-owner --no-privileges by default (docs/platforms.md)
        assert not conn.execute("SELECT has_table_privilege('app_reader', '\"Mixed Schema\".\"Odd Table\"', "
                                "'SELECT')").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM recent_orders").fetchone()[0] > 0
    # --keep-owner: owners and grants as they were (the roles exist on this server)
    kept = f"restored_{server.major}_owners"
    out = run_cli("restore", "--env", str(env), "--run", report["run_id"], "--into", kept, "--keep-owner", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["owner"] == "kept"
    with server.connect(kept) as conn:
        assert state(conn) == before
        assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'Odd Table'").fetchone()[0] \
            == "app_owner"
        assert conn.execute("SELECT has_table_privilege('app_reader', '\"Mixed Schema\".\"Odd Table\"', "
                            "'SELECT')").fetchone()[0]


def test_a_purge_a_foreign_key_blocks_is_refused_whole(shaped: tuple[PgServer, str], tmp_path: Path) -> None:
    """invoices has 199 expired rows; the youngest one is still referenced ON DELETE RESTRICT. A batched
    purge would delete 150 rows before it met the blocker: the purge must be refused before any delete,
    naming the referencing table and key, and the run must end failed with its report."""
    server, dbname = shaped
    rule = {"table": "invoices", "column": "issued_at", "older_than": "200d", "max_share": 0.9, "batch_size": 50}
    env = write_env(server, dbname, tmp_path, rules=[rule], pg_bin_dir=client_bin_dir(server.major))
    rb = tmp_path / "blocked.yaml"
    rb.write_text(yaml.safe_dump(PURGE_ONLY, sort_keys=False))
    with server.connect(dbname) as conn:
        before = {t: fingerprint(conn, t) for t in ("invoices", "invoice_refs")}
        assert conn.execute("SELECT count(*) FROM invoices WHERE issued_at < now() - interval '200 days'"
                            ).fetchone()[0] == 199
    res = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json",
                  "--accept-unverified-backup", "--reason", "matrix: the FK refusal needs no backup")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    report = report_of(res.stdout)
    assert report["status"] == "failed"
    failed = json.dumps(report, default=str)
    assert "invoice_refs" in failed and "invoice_refs_invoice_id_fkey" in failed, failed[:2000]
    with server.connect(dbname) as conn:
        assert {t: fingerprint(conn, t) for t in ("invoices", "invoice_refs")} == before  # nothing deleted
