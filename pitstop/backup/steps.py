"""Pre-backup: ``pg_dump`` streamed into storage, and a verification by a real restore.

``backup.postgres`` checks that ``pg_dump`` is at least the server's major version, then dumps
inside an exported snapshot, counting every leaf table's rows in that same snapshot (what a dump holds:
:mod:`pitstop.backup.contents`), and streams the dump into storage while hashing it (no temporary file
for the custom format; the directory format with ``-j`` is dumped to local staging and streamed as a
tar). A manifest sits next to the dump; its SHA-256 goes to the audit log. ``backup.verify`` checks the
stored manifest against that hash, the dump's size and SHA-256 against the manifest before ``pg_restore``
reads it, the archive's table of contents, restores it into a scratch database, and compares row counts,
sequences, large objects and materialized views with the manifest. ``backup.prune`` applies
retention after a successful run. Destructive steps are gated on a verified backup from this run.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field

from ..audit import now_iso
from ..connectors.postgres import Database
from ..context import RunContext
from ..errors import BackupError, PitstopError
from ..model import StepOutcome, Trigger
from ..pgretry import PgUnavailable, call, connect_failure_is_transient, is_transient
from ..registry import Placement, Target, planner, step
from . import checks as _checks  # noqa: F401 - registers check.backup_verified
from .catalog import delete_backup, list_backups, plan_prune
from .contents import (
    Contents,
    TableEntry,
    compare,
    count_tables,
    large_objects,
    leaf_tables,
    matviews,
    no_row_security,
    read_restored,
    sequences,
)
from .restore import PgServer, create_database, restore
from .state import BackupPlugin, BackupState
from .stream import stream_directory, stream_dump


class BackupParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    compress: int | None = Field(None, ge=0, le=9, description="pg_dump -Z level (default: backup.compress)")


class VerifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PruneParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _contents_when(conn: Any, tables: list[TableEntry], ready: threading.Event | None) -> list[TableEntry]:
    if ready is not None:
        ready.wait()
    return count_tables(conn, tables)


def check_versions(db: Database) -> tuple[int, str, int]:
    server_major, server_version = db.server_version()
    dump = db.tool("pg_dump")
    dump_major = db.tool_major("pg_dump")
    if dump_major < server_major:
        raise BackupError(f"pg_dump {dump_major} ({dump}) cannot safely dump PostgreSQL {server_version} "
                          f"(server major {server_major}): point database.pg_bin_dir at the "
                          f"PostgreSQL {server_major} client binaries (e.g. /usr/lib/postgresql/{server_major}/bin)")
    return server_major, server_version, dump_major


def backup_kind(ctx: RunContext) -> str:
    """Retention class of this run's backup: emergency runs, else the runbook's kind."""
    if ctx.options.trigger == Trigger.EMERGENCY:
        return "emergency"
    return ctx.runbook.kind


def backup_key(ctx: RunContext, suffix: str) -> str:
    return f"backups/{ctx.cfg.name}/{ctx.run_id}/{ctx.db.dbname}{suffix}"


def _database_size(conn: Any) -> int:
    row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0])


def _dump_in_snapshot(ctx: RunContext, compress: int, directory: bool, key: str) -> tuple[Any, Contents, int]:
    db, bcfg = ctx.db, ctx.cfg.backup
    with db.connect() as snap:
        snap.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        # The row counts run beside pg_dump: one backend, no parallel workers stealing its CPU; and, like
        # pg_dump's, never filtered by a row-level security policy (an error names the table instead).
        snap.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        no_row_security(snap, local=True)
        row = snap.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        snapshot = str(row[0])
        db_size = _database_size(snap)
        # What the dump holds besides rows, read before pg_dump starts: sequences are not transactional, so
        # pg_dump reads each at the same position or further along (compared as "not behind" on restore).
        tables, seqs = leaf_tables(snap), sequences(snap)
        blobs, views = large_objects(snap), matviews(snap)
        argv = [db.tool("pg_dump"), f"-Z{compress}", f"--snapshot={snapshot}", "--no-password", db.dbname]
        # Row counts are taken in the same snapshot (the connection is this thread's only until the dump is
        # stored). With compression, pg_dump is bound by compressing in its own process and the counts run
        # beside it on the otherwise idle server; uncompressed, the dump is bound by the server's backend and
        # the upload, so the counts wait for pg_dump's last byte and overlap the upload's completion instead.
        dumped = threading.Event()
        after_dump = compress == 0 and not directory
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pitstop-count") as counter:
            counting = counter.submit(_contents_when, snap, tables, dumped if after_dump else None)
            try:
                if directory:
                    staging = ctx.cfg.resolve(bcfg.staging_dir) / ctx.run_id
                    stored = stream_directory(ctx, [*argv[:1], "-Fd", f"-j{bcfg.jobs}", *argv[1:]], key, staging)
                else:
                    stored = stream_dump(ctx, [*argv[:1], "-Fc", *argv[1:]], key, db_size, dumped)
            except BackupError as exc:
                wait([counting])
                lost = counting.exception()
                if lost is not None and is_transient(lost):
                    raise lost from None  # the snapshot's connection died: pg_dump could not use it
                if connect_failure_is_transient(str(exc)):
                    raise PgUnavailable(str(exc)) from None  # pg_dump's own connection was lost
                if "invalid snapshot identifier" in str(exc):  # the snapshot holder died before pg_dump imported it
                    raise PgUnavailable(str(exc)) from None
                raise
            finally:
                dumped.set()
                wait([counting])
            try:
                counted = counting.result()
            except BaseException:
                ctx.storage.delete(key)  # a dump without its counts has no manifest: nothing would ever prune it
                raise
        snap.execute("COMMIT")
    return stored, Contents(tables=counted, sequences=seqs, large_objects=blobs, materialized_views=views), db_size


@step("backup.postgres", params=BackupParams, placement=Placement.OUTSIDE, target=Target.DATABASE)
def backup_postgres(ctx: RunContext, params: BackupParams) -> StepOutcome:
    """Dump the database straight into storage (custom format, or directory with -j), with a manifest."""
    db, bcfg = ctx.db, ctx.cfg.backup
    compress = bcfg.compress if params.compress is None else params.compress
    server_major, server_version, dump_major = check_versions(db)
    directory = bcfg.format == "directory"
    key = backup_key(ctx, ".dump.tar" if directory else ".dump")
    started = now_iso()
    t0 = time.monotonic()
    # A lost connection (snapshot holder or pg_dump's own) redoes the whole dump in a new snapshot,
    # to the same key: the row counts always describe the stored dump (pitstop.pgretry).
    stored, contents, db_size = call(ctx, "backup", _dump_in_snapshot, ctx, compress, directory, key)
    if stored.size == 0:
        ctx.storage.delete(key)
        raise BackupError("pg_dump produced an empty dump")
    upload = dict(getattr(ctx.storage, "last_upload", {}) or {})
    retries = len(getattr(ctx.storage, "retries", []) or [])
    counts = contents.row_counts
    manifest = {"environment": ctx.cfg.name, "database": db.dbname, "server_version": server_version,
                "server_major": server_major, "pg_dump_major": dump_major, "format": bcfg.format,
                "compress": compress, "kind": backup_kind(ctx), "trigger": ctx.options.trigger.value,
                "runbook": ctx.runbook.name, "started_at": started, "finished_at": now_iso(),
                "duration_s": round(time.monotonic() - t0, 3), "database_size": db_size, "size": stored.size,
                "sha256": stored.sha256, "key": key, "location": stored.location, "upload": upload,
                **contents.manifest_fields(), "run_id": ctx.run_id, "verified": False}
    digest = write_manifest(ctx, manifest)
    state = ctx.state.of(BackupState)
    state.backup = {**manifest, MANIFEST_HASH: digest}
    ctx.event("backup.created", location=stored.location, size=stored.size, sha256=stored.sha256,
              tables=len(counts), rows=sum(counts.values()), sequences=len(contents.sequences),
              large_objects=contents.large_objects, format=bcfg.format, kind=manifest["kind"],
              database_size=db_size, duration_s=manifest["duration_s"], transient_retries=retries,
              manifest_key=backup_key(ctx, ".manifest.json"), manifest_sha256=digest, **upload)
    return StepOutcome(changed=True, summary=f"{stored.size / 1024:.0f} KiB, {len(counts)} tables, sha256 "
                       f"{stored.sha256[:12]}…", data={"backup": state.backup})


# The SHA-256 of the manifest as this run last wrote it: kept beside the manifest's fields in the run's state
# (and so in the audit log's step data, from which resume rebuilds it), never inside the stored manifest.
MANIFEST_HASH = "manifest_sha256"


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in manifest.items() if k != MANIFEST_HASH}, indent=2).encode()


def write_manifest(ctx: RunContext, manifest: dict[str, Any]) -> str:
    """Store the manifest next to the dump; returns the SHA-256 of the bytes stored."""
    body = manifest_bytes(manifest)
    ctx.storage.put_bytes(backup_key(ctx, ".manifest.json"), body)
    return hashlib.sha256(body).hexdigest()


def check_stored_manifest(ctx: RunContext, recorded: list[str]) -> None:
    """The manifest in storage must be one this run wrote (their SHA-256s are in the audit log): the dump's
    size and checksum are judged against it, so storage must not be able to rewrite it unnoticed."""
    if not recorded:
        return  # a backup recorded before manifests were hashed
    mkey = backup_key(ctx, ".manifest.json")
    try:
        body = ctx.storage.get_bytes(mkey)
    except (OSError, PitstopError) as exc:
        raise BackupError(f"cannot read the backup manifest {ctx.storage.location(mkey)}: {exc}") from None
    got = hashlib.sha256(body).hexdigest()
    if got not in recorded:
        raise BackupError(f"the backup manifest {ctx.storage.location(mkey)} is not the one this run wrote "
                          f"(SHA-256 {got[:16]}…, the audit log says {recorded[-1][:16]}…): storage was "
                          "changed after the backup; nothing of it was restored")


def _verify_server(ctx: RunContext) -> PgServer:
    dsn = ctx.cfg.database.verify_server
    if dsn:
        return PgServer.from_dsn(dsn, ctx.db, default_db="postgres")[0]
    return PgServer.configured(ctx.db)


def scratch_prefix(environment: str) -> str:
    """Scratch databases of ``environment``: ``pitstop_verify_<6 hex of its name>_``."""
    return f"pitstop_verify_{hashlib.sha256(environment.encode()).hexdigest()[:6]}_"


def _drop_leftovers(ctx: RunContext, admin: Any) -> None:
    """Scratch databases of this environment left by runs that died mid-verification (a killed process
    cannot drop its own). Only while holding the environment lock: then no live run of it uses one."""
    if not ctx.holds_environment_lock:
        return
    pattern = scratch_prefix(ctx.cfg.name).replace("_", r"\_") + "%"
    stale = [r[0] for r in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [pattern])]
    for name in stale:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    if stale:
        ctx.event("backup.scratch_dropped", databases=stale, reason="left by a run that died mid-verification")


def verify_backup(ctx: RunContext, backup: dict[str, Any]) -> dict[str, Any]:
    """Restore ``backup`` into a scratch database and compare; returns evidence or raises BackupError."""
    server = _verify_server(ctx)
    scratch = f"{scratch_prefix(ctx.cfg.name)}{uuid.uuid4().hex[:10]}"
    t0 = time.monotonic()
    with server.connect("postgres", autocommit=True) as admin:
        _drop_leftovers(ctx, admin)
        create_database(admin, scratch)
    try:
        try:
            toc = restore(server, ctx.storage, backup, scratch, bcfg=ctx.cfg.backup,
                          staging=ctx.cfg.resolve(ctx.cfg.backup.staging_dir))
        except BackupError as exc:
            # size and checksum are judged before pg_restore's exit code: a lost session is the server's
            # doing, not the dump's, and the whole verification is redone in a new scratch database
            if connect_failure_is_transient(str(exc)):
                raise PgUnavailable(str(exc)) from None
            raise
        with server.connect(scratch) as conn:
            restored = read_restored(conn)
    finally:
        with server.connect("postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
    diffs = compare(Contents.from_manifest(backup), restored)
    counts = restored.row_counts
    evidence = {"tables": len(counts), "rows": sum(counts.values()), "row_counts": counts,
                "sequences": len(restored.sequences), "large_objects": restored.large_objects,
                "materialized_views": len(restored.materialized_views),
                "duration_s": round(time.monotonic() - t0, 3), "sha256": backup["sha256"], "size": backup["size"],
                "differences": diffs, **toc}
    if diffs:
        raise BackupError(f"the restored database differs from the manifest in {len(diffs)} place(s): "
                          + ", ".join(list(diffs)[:5]))
    return evidence


def _recorded_manifest_hashes(ctx: RunContext, backup: dict[str, Any]) -> list[str]:
    """Every manifest this run wrote, oldest first: as its audit log recorded them, and as its state holds."""
    found = [str(e["data"][MANIFEST_HASH]) for e in ctx.audit.events
             if e["kind"] in ("backup.created", "backup.verified") and e["data"].get(MANIFEST_HASH)]
    return found + ([str(backup[MANIFEST_HASH])] if backup.get(MANIFEST_HASH) else [])


@step("backup.verify", params=VerifyParams, placement=Placement.OUTSIDE, target=Target.DATABASE)
def backup_verify(ctx: RunContext, params: VerifyParams) -> StepOutcome:
    """Restore this run's backup into a scratch database and compare size, checksum and row counts."""
    backup = ctx.state.of(BackupState).backup
    if not backup:
        raise BackupError("no backup from this run to verify (backup.postgres must come first)")
    t0 = time.monotonic()
    try:
        check_stored_manifest(ctx, _recorded_manifest_hashes(ctx, backup))
        # a lost connection (the scratch database's, pg_restore's or the admin one) redoes the verification
        evidence = call(ctx, "verify", verify_backup, ctx, backup)
    except PitstopError as exc:
        ctx.event("backup.verify_failed", location=backup["location"], error=ctx.redact(str(exc)),
                  duration_s=round(time.monotonic() - t0, 3))
        raise
    backup["verified"] = True
    backup["verification"] = {k: v for k, v in evidence.items() if k != "row_counts"}
    body = manifest_bytes(backup)
    backup[MANIFEST_HASH] = hashlib.sha256(body).hexdigest()
    # recorded before the manifest is rewritten: an audit log never lacks the hash of a manifest in storage
    ctx.event("backup.verified", location=backup["location"], **evidence, manifest_sha256=backup[MANIFEST_HASH])
    ctx.storage.put_bytes(backup_key(ctx, ".manifest.json"), body)
    return StepOutcome(changed=False, summary=f"restored {evidence['rows']} rows in {evidence['tables']} tables, "
                       "counts, sequences, size and SHA-256 match", data={"verification": backup["verification"]})


@step("backup.prune", params=PruneParams, placement=Placement.OUTSIDE, target=Target.NONE)
def backup_prune(ctx: RunContext, params: PruneParams) -> StepOutcome:
    """Delete backups beyond the retention counts (backup.keep_*); never the newest verified one."""
    protect = {ctx.run_id}
    doomed = plan_prune(list_backups(ctx.storage, ctx.cfg.name), ctx.cfg.backup, protect)
    for b in doomed:
        delete_backup(ctx.storage, ctx.cfg.name, b.run_id)
    ctx.event("backup.pruned", runs=[b.run_id for b in doomed], bytes=sum(b.size for b in doomed))
    return StepOutcome(changed=bool(doomed), summary=f"pruned {len(doomed)} old backup(s)",
                       data={"pruned": [b.run_id for b in doomed]})


@planner("backup.postgres")
def plan_backup(ctx: RunContext, params: BackupParams) -> list[str]:
    suffix = ".dump.tar" if ctx.cfg.backup.format == "directory" else ".dump"
    return [f"pg_dump ({ctx.cfg.backup.format}) {ctx.db.dbname} → {ctx.storage.location(backup_key(ctx, suffix))}"]


@planner("backup.prune")
def plan_prune_step(ctx: RunContext, params: PruneParams) -> list[str]:
    doomed = plan_prune(list_backups(ctx.storage, ctx.cfg.name), ctx.cfg.backup)
    return [f"delete backup of {b.run_id} ({b.kind})" for b in doomed] or ["nothing to prune"]


PLUGIN = BackupPlugin("backup")
