"""Backups of databases the demo does not have, and restores that cannot be turned against us.

* a range-partitioned table (parent without data of its own, leaves in two schemas), mixed-case and
  space-containing names, an identity column: backup.verify passes and ``pitstop restore`` reproduces
  every leaf's rows (checksums) and the sequence position;
* a dump swapped in storage for one whose CHECK constraint runs ``COPY ... TO PROGRAM`` is refused on
  its checksum before pg_restore reads it: the program never runs;
* template/maintenance databases, the source database and existing databases are refused (exit 2), a
  malformed run id is exit 2, and a failed restore drops the database it created.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.backup.backup_helpers import evil_dump, write_runbook
from tests.conftest import report_of, run_cli
from tests.reliability.results import record

SHAPES = """
CREATE SCHEMA archive;
CREATE SCHEMA "Sales Dept";
CREATE TABLE audit_log (id bigint GENERATED ALWAYS AS IDENTITY, at timestamptz NOT NULL, what text)
  PARTITION BY RANGE (at);
CREATE TABLE archive.audit_log_2025 PARTITION OF audit_log FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE audit_log_2026 PARTITION OF audit_log FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE audit_log_rest PARTITION OF audit_log DEFAULT;
INSERT INTO audit_log (at, what)
  SELECT timestamptz '2025-03-01' + (g || ' days')::interval, 'e' || g FROM generate_series(1, 600) g;
CREATE TABLE "Sales Dept"."Order Lines" ("Line No" int, "Amount" numeric);
INSERT INTO "Sales Dept"."Order Lines" SELECT g, g * 1.5 FROM generate_series(1, 40) g;
CREATE TABLE "MixedCase" (v text);
INSERT INTO "MixedCase" VALUES ('a'), ('b');
CREATE UNLOGGED TABLE scratch_cache (k text);
INSERT INTO scratch_cache VALUES ('x');
CREATE TABLE empty_one (id int);
CREATE MATERIALIZED VIEW audit_per_year AS SELECT date_trunc('year', at) y, count(*) FROM audit_log GROUP BY 1;
"""

LEAVES = ['archive.audit_log_2025', 'public.audit_log_2026', 'public.audit_log_rest',
          '"Sales Dept"."Order Lines"', 'public."MixedCase"', 'public.scratch_cache', 'public.empty_one']


def checksums(conn: psycopg.Connection) -> dict[str, tuple[int, str]]:
    out = {}
    for t in LEAVES:
        row = conn.execute(f"SELECT count(*), coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') "
                           f"FROM {t} x").fetchone()
        out[t] = (row[0], row[1])
    return out


@pytest.fixture
def shaped_env(make_env: Any, seeded_db: str, db_conn: Any, tmp_path: Path) -> tuple[Path, Path]:
    with db_conn(seeded_db) as conn:
        conn.execute(SHAPES)
    env = make_env()
    rb = write_runbook(tmp_path / "backup.yaml", [
        {"name": "pre-backup", "steps": [{"uses": "backup.postgres"}, {"uses": "backup.verify"}]}], kind="monthly")
    return env, rb


def _drop(pg_socket: str, name: str) -> None:
    with psycopg.connect(host=pg_socket, dbname="postgres", user="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_partitioned_and_oddly_named_tables_verify_and_restore(shaped_env: tuple[Path, Path], seeded_db: str,
                                                               db_conn: Any, pg_socket: str) -> None:
    env, rb = shaped_env
    res = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr + res.stdout
    report = report_of(res.stdout)
    assert report["status"] == "succeeded" and report["backup"]["verified"] is True
    target = f"restored_{uuid.uuid4().hex[:8]}"
    try:
        out = run_cli("restore", "--env", str(env), "--run", report["run_id"], "--into", target, "--json")
        assert out.returncode == 0, out.stderr + out.stdout
        info = json.loads(out.stdout)
        assert info["differences"] == [] and "public.audit_log" not in info["row_counts"]
        assert info["row_counts"]["archive.audit_log_2025"] > 0
        with db_conn(seeded_db) as src, db_conn(target) as dst:
            assert checksums(dst) == checksums(src)
            nextval = "SELECT nextval(pg_get_serial_sequence('audit_log', 'id'))"
            assert dst.execute(nextval).fetchone() == src.execute(nextval).fetchone()
            assert dst.execute("SELECT count(*) FROM audit_per_year").fetchone()[0] > 0
    finally:
        _drop(pg_socket, target)


def test_a_dump_swapped_in_storage_is_refused_before_any_of_it_runs(shaped_env: tuple[Path, Path], tmp_path: Path,
                                                                    pg_socket: str) -> None:
    env, rb = shaped_env
    res = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr + res.stdout
    report = report_of(res.stdout)
    marker = Path("/tmp") / f"pitstop-evil-{uuid.uuid4().hex[:8]}"
    evil = tmp_path / "evil.dump"
    evil_dump(pg_socket, marker, evil)
    stored = Path(report["backup"]["location"].removeprefix("file://"))
    assert stored.is_file()
    data = evil.read_bytes()
    size = stored.stat().st_size
    assert len(data) < size
    stored.write_bytes(data + b"\0" * (size - len(data)))  # same size: only the checksum can tell
    target = f"restored_{uuid.uuid4().hex[:8]}"
    try:
        out = run_cli("restore", "--env", str(env), "--run", report["run_id"], "--into", target)
        record("swapped_dump", forged_inputs=1, trusted=int(out.returncode == 0 or marker.exists()))
        assert out.returncode == 1, out.stderr + out.stdout
        assert "SHA-256" in out.stderr and "manifest" in out.stderr
        assert "Traceback" not in out.stderr
        assert not marker.exists(), "the swapped dump's program ran"
        with psycopg.connect(host=pg_socket, dbname="postgres", user="postgres") as conn:
            left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [target]).fetchone()
        assert left is None, "a failed restore left the database it created"
    finally:
        marker.unlink(missing_ok=True)
        _drop(pg_socket, target)


@pytest.mark.parametrize("into", ["template1", "template0", "postgres", "SOURCE", "EXISTING"])
def test_restore_targets_that_are_refused(make_env: Any, seeded_db: str, pg_socket: str, into: str,
                                          tmp_path: Path) -> None:
    env = make_env()
    rb = write_runbook(tmp_path / "backup.yaml", [{"name": "pre-backup", "steps": [{"uses": "backup.postgres"}]}])
    res = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr + res.stdout
    run_id = json.loads(res.stdout)["run_id"]
    existing = f"existing_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(host=pg_socket, dbname="postgres", user="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{existing}"')
    try:
        name = {"SOURCE": seeded_db, "EXISTING": existing}.get(into, into)
        with psycopg.connect(host=pg_socket, dbname="template1", user="postgres") as conn:
            before = conn.execute("SELECT count(*) FROM pg_class WHERE relkind = 'r'").fetchone()
        out = run_cli("restore", "--env", str(env), "--run", run_id, "--into", name)
        assert out.returncode == 2, out.stderr + out.stdout
        assert "Traceback" not in out.stderr and "refusing" in out.stderr or "already exists" in out.stderr
        with psycopg.connect(host=pg_socket, dbname="template1", user="postgres") as conn:
            assert conn.execute("SELECT count(*) FROM pg_class WHERE relkind = 'r'").fetchone() == before
        if into == "EXISTING":
            no_reason = run_cli("restore", "--env", str(env), "--run", run_id, "--into", name, "--replace")
            assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
            ok = run_cli("restore", "--env", str(env), "--run", run_id, "--into", name, "--replace",
                         "--reason", "refresh the staging copy", "--json")
            assert ok.returncode == 0, ok.stderr + ok.stdout
            assert json.loads(ok.stdout)["replaced"] is True
    finally:
        _drop(pg_socket, existing)


@pytest.mark.parametrize("run_id", ["BOGUS", "../../etc", "/etc/passwd"])
def test_restore_of_an_unknown_or_malformed_run_is_bad_input(make_env: Any, run_id: str) -> None:
    env = make_env()
    out = run_cli("restore", "--env", str(env), "--run", run_id, "--into", "whatever_db")
    assert out.returncode == 2, out.stderr + out.stdout
    assert "Traceback" not in out.stderr


def test_a_dump_swapped_together_with_its_manifest_is_refused(shaped_env: tuple[Path, Path], tmp_path: Path,
                                                              pg_socket: str) -> None:
    """The manifest is in storage too: the run's hash-chained audit log is what it is checked against."""
    import hashlib

    env, rb = shaped_env
    res = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr + res.stdout
    report = report_of(res.stdout)
    marker = Path("/tmp") / f"pitstop-evil-{uuid.uuid4().hex[:8]}"
    evil = tmp_path / "evil.dump"
    evil_dump(pg_socket, marker, evil)
    stored = Path(report["backup"]["location"].removeprefix("file://"))
    data = evil.read_bytes()
    stored.write_bytes(data)
    manifest_path = stored.with_name(stored.name.removesuffix(".dump") + ".manifest.json")
    manifest = json.loads(manifest_path.read_text())
    manifest.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    manifest_path.write_text(json.dumps(manifest))
    target = f"restored_{uuid.uuid4().hex[:8]}"
    try:
        out = run_cli("restore", "--env", str(env), "--run", report["run_id"], "--into", target)
        record("swapped_dump_and_manifest", forged_inputs=1, trusted=int(out.returncode == 0 or marker.exists()))
        assert out.returncode == 1, out.stderr + out.stdout
        assert "does not match what the run recorded" in " ".join(out.stderr.split())
        assert not marker.exists()
    finally:
        marker.unlink(missing_ok=True)
        _drop(pg_socket, target)


def test_a_role_that_cannot_create_databases_gets_a_clear_verify_failure(make_env: Any, seeded_db: str,
                                                                        pg_socket: str, tmp_path: Path) -> None:
    """A non-superuser role without CREATEDB (a newcomer's first platform): the verification says what to grant."""
    role = f"owner_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(host=pg_socket, dbname="postgres", user="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN IN ROLE pg_read_all_data')  # reads everything, creates nothing
    try:
        env = make_env(lambda c: c["database"].update(user=role))
        rb = write_runbook(tmp_path / "verify.yaml", [
            {"name": "pre-backup", "steps": [{"uses": "backup.postgres"}, {"uses": "backup.verify"}]}])
        res = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
        assert res.returncode == 1, res.stdout + res.stderr
        failure = report_of(res.stdout)["failure"]
        assert "may not create databases" in failure["error"] and "CREATEDB" in failure["error"]
    finally:
        with psycopg.connect(host=pg_socket, dbname="postgres", user="postgres", autocommit=True) as conn:
            conn.execute(f'DROP ROLE "{role}"')
