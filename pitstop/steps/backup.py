"""Pre-backup: ``pg_dump`` streamed into storage, and a verification by a real restore.

``backup.postgres`` dumps in custom format inside an exported snapshot, counting every table's rows
in that same snapshot, and streams the dump into storage while hashing it (no temporary file).
A manifest sits next to the dump. ``backup.verify`` streams the object back, checks its SHA-256,
restores it into a scratch database and compares the row counts with the manifest. Destructive
steps are gated on a verified backup from this run.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
import uuid
from typing import IO, Any

from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field

from ..audit import now_iso
from ..connectors.postgres import Database
from ..context import RunContext
from ..errors import BackupError
from ..model import StepOutcome
from ..registry import Placement, Target, planner, step

COUNT_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND NOT c.relispartition
ORDER BY 1, 2
"""


class BackupParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    compress: int = Field(6, ge=0, le=9, description="pg_dump -Z level")


class VerifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def count_rows(conn: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for schema, table in conn.execute(COUNT_TABLES).fetchall():
        q = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        row = conn.execute(q).fetchone()
        counts[f"{schema}.{table}"] = int(row[0])
    return counts


def check_versions(db: Database) -> tuple[int, str, int]:
    server_major, server_version = db.server_version()
    dump_major = db.tool_major("pg_dump")
    if dump_major < server_major:
        raise BackupError(f"pg_dump {dump_major} cannot safely dump PostgreSQL {server_version} "
                          f"(server major {server_major}): point database.pg_bin_dir at the "
                          f"PostgreSQL {server_major} client binaries (e.g. /usr/lib/postgresql/{server_major}/bin)")
    return server_major, server_version, dump_major


def backup_key(ctx: RunContext, suffix: str) -> str:
    return f"backups/{ctx.cfg.name}/{ctx.run_id}/{ctx.db.dbname}{suffix}"


def _drain(stream: IO[bytes], sink: list[bytes]) -> None:
    sink.append(stream.read())


@step("backup.postgres", params=BackupParams, placement=Placement.OUTSIDE, target=Target.DATABASE)
def backup_postgres(ctx: RunContext, params: BackupParams) -> StepOutcome:
    """Dump the database (custom format) straight into storage, with a manifest."""
    db = ctx.db
    server_major, server_version, dump_major = check_versions(db)
    key = backup_key(ctx, ".dump")
    started = now_iso()
    t0 = time.monotonic()
    with db.connect() as snap:
        snap.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = snap.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        snapshot = str(row[0])
        counts = count_rows(snap)
        argv = [db.tool("pg_dump"), "-Fc", f"-Z{params.compress}", f"--snapshot={snapshot}", "--no-password",
                db.dbname]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=db.tool_env())
        assert proc.stdout is not None and proc.stderr is not None
        err: list[bytes] = []
        reader = threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True)
        reader.start()
        try:
            stored = ctx.storage.put_stream(key, proc.stdout)
        finally:
            code = proc.wait()
            reader.join()
        snap.execute("COMMIT")
    if code != 0:
        ctx.storage.delete(key)
        raise BackupError(f"pg_dump exited {code}: {ctx.redact(b''.join(err).decode(errors='replace').strip())}")
    if stored.size == 0:
        raise BackupError("pg_dump produced an empty dump")
    manifest = {"database": db.dbname, "server_version": server_version, "pg_dump_major": dump_major,
                "format": "custom", "started_at": started, "finished_at": now_iso(),
                "duration_s": round(time.monotonic() - t0, 3), "size": stored.size, "sha256": stored.sha256,
                "key": key, "location": stored.location, "row_counts": counts, "run_id": ctx.run_id}
    ctx.storage.put_bytes(backup_key(ctx, ".manifest.json"), json.dumps(manifest, indent=2).encode())
    ctx.state["backup"] = {**manifest, "verified": False}
    ctx.event("backup.created", location=stored.location, size=stored.size, sha256=stored.sha256,
              tables=len(counts), rows=sum(counts.values()))
    return StepOutcome(changed=True, summary=f"{stored.size / 1024:.0f} KiB, {len(counts)} tables, sha256 "
                       f"{stored.sha256[:12]}…", data={"backup": manifest})


def restore_into(db: Database, ctx: RunContext, key: str, dbname: str, expected_sha: str | None) -> str:
    """Stream ``key`` from storage into ``pg_restore -d dbname``; return the SHA-256 seen."""
    argv = [db.tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", "--no-password",
            "-d", dbname]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=db.tool_env(dbname))
    assert proc.stdin is not None and proc.stderr is not None
    err: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True)
    reader.start()
    digest = hashlib.sha256()
    try:
        with ctx.storage.open(key) as src:
            for chunk in iter(lambda: src.read(1024 * 1024), b""):
                digest.update(chunk)
                proc.stdin.write(chunk)
    except BrokenPipeError:
        pass
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        code = proc.wait()
        reader.join()
    seen = digest.hexdigest()
    if expected_sha and seen != expected_sha:
        raise BackupError(f"backup {key} is corrupt: SHA-256 {seen[:16]}… does not match the manifest "
                          f"{expected_sha[:16]}…")
    if code != 0:
        msg = b"".join(err).decode(errors="replace").strip().splitlines()
        raise BackupError(f"pg_restore of {key} failed (exit {code}): {msg[-1] if msg else 'no message'}")
    return seen


@step("backup.verify", params=VerifyParams, placement=Placement.OUTSIDE, target=Target.DATABASE)
def backup_verify(ctx: RunContext, params: VerifyParams) -> StepOutcome:
    """Restore this run's backup into a scratch database and compare row counts."""
    backup = ctx.state.get("backup")
    if not backup:
        raise BackupError("no backup from this run to verify (backup.postgres must come first)")
    db = ctx.db
    scratch = f"pitstop_verify_{uuid.uuid4().hex[:10]}"
    t0 = time.monotonic()
    with db.connect(autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
    try:
        restore_into(db, ctx, backup["key"], scratch, backup["sha256"])
        with db.connect(scratch) as conn:
            restored = count_rows(conn)
    finally:
        with db.connect(autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
    expected = backup["row_counts"]
    diffs = {t: {"manifest": expected.get(t), "restored": restored.get(t)}
             for t in sorted(set(expected) | set(restored)) if expected.get(t) != restored.get(t)}
    evidence = {"tables": len(restored), "rows": sum(restored.values()), "duration_s": round(time.monotonic() - t0, 3),
                "differences": diffs}
    ctx.event("backup.verified" if not diffs else "backup.verify_failed", **evidence)
    if diffs:
        raise BackupError(f"restored row counts differ from the manifest in {len(diffs)} table(s): "
                          + ", ".join(list(diffs)[:5]))
    backup["verified"] = True
    backup["verification"] = evidence
    return StepOutcome(changed=False, summary=f"restored {evidence['rows']} rows in {evidence['tables']} tables, "
                       "counts match", data={"verification": evidence})


@planner("backup.postgres")
def plan_backup(ctx: RunContext, params: BackupParams) -> list[str]:
    return [f"pg_dump {ctx.db.dbname} → {ctx.storage.location(backup_key(ctx, '.dump'))}"]
