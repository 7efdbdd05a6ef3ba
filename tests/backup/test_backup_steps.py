"""backup.postgres / backup.verify against the real embedded PostgreSQL, to disk and to S3 (moto)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pitstop.backup.state import BackupState
from pitstop.backup.steps import BackupParams, VerifyParams, backup_postgres, backup_verify
from pitstop.errors import BackupError
from tests.backup.backup_helpers import SECRET_ENV, kinds, s3_storage

MiB = 1024 * 1024
SEEDED = {"public.events": 6000, "public.orders": 1000, "public.sessions": 2000, "public.users": 200}


def add_incompressible(pg_socket: str, dbname: str, mib: int) -> None:
    with psycopg.connect(host=pg_socket, dbname=dbname, user="postgres") as conn:
        conn.execute("CREATE TABLE blobs (id int PRIMARY KEY, b bytea)")
        for i in range(mib):
            conn.execute("INSERT INTO blobs VALUES (%s, %s)", (i, os.urandom(MiB)))


def test_backup_to_disk_and_verify(make_env: Any, ctx_for: Any) -> None:
    ctx = ctx_for(make_env())
    out = backup_postgres(ctx, BackupParams())
    m = out.data["backup"]
    path = Path(m["location"])
    assert path.is_file() and path.stat().st_size == m["size"] and path.read_bytes()[:5] == b"PGDMP"
    assert m["row_counts"] == SEEDED and m["kind"] == "monthly" and m["server_major"] == 16
    assert m["pg_dump_major"] >= m["server_major"] and m["database_size"] > 0
    manifest_path = path.with_name(path.name.replace(".dump", ".manifest.json"))
    assert json.loads(manifest_path.read_text())["verified"] is False
    backup_verify(ctx, VerifyParams())
    assert ctx.state.of(BackupState).backup["verified"] is True
    stored = json.loads(manifest_path.read_text())
    assert stored["verified"] is True and stored["verification"]["rows"] == sum(SEEDED.values())
    ev = next(e for e in ctx.audit.events if e["kind"] == "backup.verified")["data"]
    assert ev["row_counts"] == SEEDED and ev["differences"] == {} and ev["toc_table_data"] == 4
    assert not list(path.parent.glob("*.partial"))


def test_backup_streams_to_s3_multipart_and_verifies(make_env: Any, ctx_for: Any, moto_endpoint: str,
                                                      bucket: str, s3_client: Any, pg_socket: str,
                                                      seeded_db: str) -> None:
    add_incompressible(pg_socket, seeded_db, 12)
    env = make_env(lambda c: c.update(storage=s3_storage(moto_endpoint, bucket, part_size=5 * MiB,
                                                         max_concurrency=2, server_side_encryption="AES256",
                                                         storage_class="STANDARD_IA")))
    ctx = ctx_for(env)
    m = backup_postgres(ctx, BackupParams()).data["backup"]
    assert m["location"] == f"s3://{bucket}/{m['key']}" and m["size"] > 12 * MiB
    assert m["upload"]["multipart"] and m["upload"]["parts"] == -(-m["size"] // (5 * MiB))
    head = s3_client.head_object(Bucket=bucket, Key=m["key"])
    assert head["ContentLength"] == m["size"] and head["ServerSideEncryption"] == "AES256"
    assert head["StorageClass"] == "STANDARD_IA"
    backup_verify(ctx, VerifyParams())
    assert ctx.state.of(BackupState).backup["verified"] and m["row_counts"]["public.blobs"] == 12
    manifest = json.loads(s3_client.get_object(Bucket=bucket, Key=m["key"].replace(".dump", ".manifest.json"))
                          ["Body"].read())
    assert manifest["verified"] is True
    text = (ctx.run_dir / "audit.jsonl").read_text()
    assert os.environ[SECRET_ENV] not in text


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _bitflip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) * 2 // 3] ^= 0x10
    p.write_bytes(bytes(data))


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _plain_sql(p: Path) -> None:
    p.write_bytes(b"--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n")


@pytest.mark.parametrize(("damage", "message"), [
    (_truncate, r"is truncated: \d+ of \d+ bytes"),
    (_bitflip, r"is corrupt: SHA-256 .* does not match the manifest"),
    (_empty, r"empty \(0 bytes\)"),
    (_plain_sql, r"not a pg_dump custom-format archive .* plain SQL dump"),
])
def test_corrupted_backup_fails_verification(make_env: Any, ctx_for: Any, damage: Any, message: str) -> None:
    ctx = ctx_for(make_env())
    m = backup_postgres(ctx, BackupParams()).data["backup"]
    damage(Path(m["location"]))
    with pytest.raises(BackupError, match=message):
        backup_verify(ctx, VerifyParams())
    assert ctx.state.of(BackupState).backup["verified"] is False
    failed = [e for e in ctx.audit.events if e["kind"] == "backup.verify_failed"]
    assert len(failed) == 1 and failed[0]["data"]["location"] == m["location"]
    assert "backup.verified" not in kinds(ctx)
    with psycopg.connect(**ctx.db.conninfo("postgres")) as conn:  # the scratch database is gone
        left = conn.execute("SELECT count(*) FROM pg_database "
                            "WHERE datname LIKE 'pitstop_verify_%'").fetchone()
    assert left == (0,)


def test_old_pg_dump_is_refused(make_env: Any, ctx_for: Any) -> None:
    old = "/usr/lib/postgresql/15/bin"
    ctx = ctx_for(make_env(lambda c: c["database"].update(pg_bin_dir=old)))
    from pitstop.connectors.pgtools import ClientTooOld

    with pytest.raises(ClientTooOld) as exc:
        backup_postgres(ctx, BackupParams())
    msg = str(exc.value)
    assert "pg_dump 15" in msg and "PostgreSQL 16" in msg and "database.pg_bin_dir" in msg and old in msg
    assert ctx.storage.list() == []


def test_a_run_without_a_new_enough_pg_dump_is_refused_before_it_starts(make_env: Any, tmp_path: Path) -> None:
    from tests.conftest import run_cli

    env = make_env(lambda c: c["database"].update(pg_bin_dir="/usr/lib/postgresql/15/bin"))
    res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local")
    assert res.returncode == 2, res.stdout + res.stderr
    flat = " ".join(res.stderr.split())
    assert "pg_dump 15" in flat and "PostgreSQL 16" in flat and "Traceback" not in res.stderr
    assert not list((tmp_path / "state").glob("runs/*"))  # no run folder: nothing of the run exists


def test_directory_format_with_jobs_through_s3(make_env: Any, ctx_for: Any, moto_endpoint: str,
                                               bucket: str) -> None:
    env = make_env(lambda c: c.update(storage=s3_storage(moto_endpoint, bucket),
                                      backup={"format": "directory", "jobs": 2}))
    ctx = ctx_for(env)
    m = backup_postgres(ctx, BackupParams()).data["backup"]
    assert m["format"] == "directory" and m["key"].endswith(".dump.tar")
    backup_verify(ctx, VerifyParams())
    ev = next(e for e in ctx.audit.events if e["kind"] == "backup.verified")["data"]
    assert ev["row_counts"] == SEEDED
    staging = ctx.cfg.resolve(ctx.cfg.backup.staging_dir)
    assert not staging.exists() or not any(staging.rglob("*.dat*"))  # staging cleaned up


def test_scratch_databases_of_dead_runs_are_dropped_under_the_lock(make_env: Any, ctx_for: Any,
                                                                   pg_socket: str) -> None:
    """A run killed mid-verification leaves its scratch database (nobody can drop it then). The next run
    of the environment, holding its lock, drops those of its own environment only, and says so."""
    from pitstop.backup.steps import scratch_prefix
    from tests.conftest import run_cli

    env = make_env()
    ctx = ctx_for(env)
    ours, theirs = scratch_prefix(ctx.cfg.name) + "0dead0run0", scratch_prefix("another-env") + "0dead0run0"
    with psycopg.connect(host=pg_socket, dbname="postgres", user="postgres", autocommit=True) as admin:
        for name in (ours, theirs):
            admin.execute(f'CREATE DATABASE "{name}"')

        def present() -> set[str]:
            rows = admin.execute("SELECT datname FROM pg_database WHERE datname IN (%s, %s)", [ours, theirs])
            return {r[0] for r in rows}

        try:
            backup_postgres(ctx, BackupParams())
            backup_verify(ctx, VerifyParams())  # no environment lock here: a live run might own them
            assert present() == {ours, theirs}
            res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
            assert res.returncode == 0, res.stderr[-2000:]
            assert present() == {theirs}  # another environment's scratch database is not ours to drop
            run_dir = Path(json.loads(res.stdout)["run_dir"])
            dropped = [json.loads(x)["data"] for x in (run_dir / "audit.jsonl").read_text().splitlines()
                       if json.loads(x)["kind"] == "backup.scratch_dropped"]
            assert [d["databases"] for d in dropped] == [[ours]]
        finally:
            for name in (ours, theirs):
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
