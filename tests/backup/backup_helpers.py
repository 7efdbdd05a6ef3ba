"""Helpers shared by the backup tests (imported as ``backup_helpers``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

KEY_ENV, SECRET_ENV = "PITSTOP_TEST_S3_KEY", "PITSTOP_TEST_S3_SECRET"
os.environ.setdefault(KEY_ENV, "testing-access-key")
os.environ.setdefault(SECRET_ENV, "testing-secret-key-do-not-log")


def s3_storage(endpoint: str, bucket: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "s3", "bucket": bucket, "endpoint_url": endpoint, "region": "us-east-1",
            "access_key_env": KEY_ENV, "secret_key_env": SECRET_ENV, **extra}


def kinds(ctx: Any) -> list[str]:
    return [e["kind"] for e in ctx.audit.events]


def write_runbook(path: Path, stages: list[dict[str, Any]], kind: str = "custom") -> Path:
    path.write_text(yaml.safe_dump({"name": path.stem, "kind": kind, "stages": stages}, sort_keys=False))
    return path


def pg_bin(tool: str) -> str:
    """A client binary of the session's PostgreSQL 16 (pgserver's own)."""
    import pgserver

    return str(Path(pgserver.__file__).parent / "pginstall" / "bin" / tool)


def admin(pg_socket: str, dbname: str = "postgres") -> Any:
    import psycopg

    return psycopg.connect(host=pg_socket, dbname=dbname, user="postgres", autocommit=True)


def drop_database(pg_socket: str, name: str) -> None:
    from psycopg import sql

    with admin(pg_socket) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def database_exists(pg_socket: str, name: str) -> bool:
    with admin(pg_socket) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def evil_dump(pg_socket: str, marker: Path, out: Path) -> bytes:
    """A custom-format dump whose data load runs a program through a CHECK constraint (``COPY ... TO
    PROGRAM`` creates ``marker``): restoring it as a superuser would run the program. Returns its bytes."""
    import subprocess
    import uuid

    evil = f"evil_{uuid.uuid4().hex[:8]}"
    with admin(pg_socket) as conn:
        conn.execute(f'CREATE DATABASE "{evil}"')
    try:
        with admin(pg_socket, evil) as conn:
            # the CHECK is valid, so pg_dump writes it into CREATE TABLE, before the rows: every row the
            # restore loads runs it. It does nothing in the database it was made in (the rows go in quietly).
            conn.execute(f"""
                CREATE FUNCTION boom(int) RETURNS boolean LANGUAGE plpgsql AS $$
                BEGIN
                  IF current_database() <> '{evil}' THEN
                    EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {marker}''';
                  END IF;
                  RETURN true;
                END $$;
                CREATE TABLE users (id int CHECK (boom(id)));
                INSERT INTO users VALUES (1);""")
        subprocess.run([pg_bin("pg_dump"), "-Fc", "-h", pg_socket, "-U", "postgres", "-f", str(out), evil],
                       check=True)
    finally:
        drop_database(pg_socket, evil)
    return out.read_bytes()


def padded(data: bytes, size: int) -> bytes:
    """``data`` grown to ``size`` bytes (pg_restore ignores what follows the archive): same size as the
    dump it replaces, so only the checksum can tell them apart."""
    assert len(data) < size, "the hostile dump must be smaller than the real one"
    return data + b"\0" * (size - len(data))
