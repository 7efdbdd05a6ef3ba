"""Pre-backup: ``pg_dump`` streamed into storage, and a verification by a real restore.

``backup.postgres`` checks that ``pg_dump`` is at least the server's major version, then dumps
inside an exported snapshot, counting every table's rows in that same snapshot, and streams the
dump into storage while hashing it (no temporary file for the custom format; the directory format
with ``-j`` is dumped to local staging and streamed as a tar). A manifest sits next to the dump.
``backup.verify`` checks the archive (header, ``pg_restore --list``), restores it into a scratch
database, and compares size, SHA-256 and row counts with the manifest. ``backup.prune`` applies
retention after a successful run. Destructive steps are gated on a verified backup from this run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import IO, Any, BinaryIO

from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field

from ..audit import now_iso
from ..backups import PgServer, delete_backup, list_backups, plan_prune, restore
from ..connectors.postgres import Database
from ..context import RunContext
from ..errors import BackupError, PitstopError
from ..model import StepOutcome, Trigger
from ..pgretry import PgUnavailable, call, connect_failure_is_transient, is_transient
from ..registry import Placement, Target, planner, step

# Tables that hold rows: plain tables and leaf partitions (relkind 'r', partitions included). A
# partitioned parent (relkind 'p') has no storage and no TABLE DATA entry in a dump: counting it would
# count its leaves twice and make every dump of a partitioned database look incomplete. Views, foreign
# tables and materialized views (restored by their REFRESH) hold no dumped rows either.
COUNT_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY 1, 2
"""


class BackupParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    compress: int | None = Field(None, ge=0, le=9, description="pg_dump -Z level (default: backup.compress)")


class VerifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PruneParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def count_rows(conn: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for schema, table in conn.execute(COUNT_TABLES).fetchall():
        q = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        row = conn.execute(q).fetchone()
        counts[f"{schema}.{table}"] = int(row[0])
    return counts


def _count_when(conn: Any, ready: threading.Event | None) -> dict[str, int]:
    if ready is not None:
        ready.wait()
    return count_rows(conn)


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


def _drain(stream: IO[bytes], sink: list[bytes]) -> None:
    sink.append(stream.read())


def _database_size(conn: Any) -> int:
    row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0])


class _DumpChannel:
    """pg_dump's stdout as a local stream socket rather than a pipe.

    A pipe holds at most 1 MiB here (``pipe-max-size``) and wakes the reader for every few KiB that
    arrive; a socket pair takes a 4 MiB buffer (where the kernel allows it) and ``MSG_WAITALL`` lets one
    ``recv`` fill a whole upload part: fewer wake-ups and system calls for the uploader, and pg_dump keeps
    writing while a part is hashed. Same bytes, same end-of-stream, no temporary file.
    """

    BUFFER = 4 << 20

    def __init__(self, eof: threading.Event | None = None) -> None:
        self.eof = eof or threading.Event()  # set once pg_dump's last byte has been read
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # Linux's SO_SNDBUFFORCE/SO_RCVBUFFORCE (32/33) pass the net.core.*mem_max cap when allowed.
        linux = sys.platform.startswith("linux")
        for sock in (self.ours, self.theirs):
            for forced, plain in ((32, socket.SO_SNDBUF), (33, socket.SO_RCVBUF)):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, forced if linux else plain, self.BUFFER)
                except OSError:
                    sock.setsockopt(socket.SOL_SOCKET, plain, self.BUFFER)

    def child_fd(self) -> int:
        return self.theirs.fileno()

    def started(self) -> None:
        self.theirs.close()  # the child holds its copy: end-of-stream comes when pg_dump exits

    def readinto(self, buf: Any) -> int:
        n = self.ours.recv_into(buf, len(buf), socket.MSG_WAITALL)
        if not n and len(buf):
            self.eof.set()
        return n

    def read(self, n: int = -1) -> bytes:
        data = self.ours.recv(n if n > 0 else self.BUFFER, socket.MSG_WAITALL)
        if not data:
            self.eof.set()
        return data

    def close(self) -> None:
        self.eof.set()
        self.ours.close()
        self.theirs.close()


def _stream_dump(ctx: RunContext, argv: list[str], key: str, size_hint: int,
                 eof: threading.Event | None = None) -> Any:
    """Run ``pg_dump`` writing to stdout and stream it into storage; kill it if storage fails.
    ``eof`` is set once pg_dump's output has been read to the end (or the dump failed)."""
    db = ctx.db
    channel = _DumpChannel(eof)
    try:
        proc = subprocess.Popen(argv, stdout=channel.child_fd(), stderr=subprocess.PIPE, env=db.tool_env())
        channel.started()
        assert proc.stderr is not None
        err: list[bytes] = []
        reader = threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True)
        reader.start()
        try:
            stored = ctx.storage.put_stream(key, channel, size_hint)  # type: ignore[arg-type]
        except BaseException:
            proc.kill()  # otherwise pg_dump blocks forever on its full socket
            raise
        finally:
            code = proc.wait()
            reader.join()
    finally:
        channel.close()
    if code != 0:
        ctx.storage.delete(key)
        raise BackupError(f"pg_dump exited {code}: {ctx.redact(b''.join(err).decode(errors='replace').strip())}")
    return stored


def _tar_dir(src: Path, out: BinaryIO) -> None:
    try:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            tar.add(src, arcname="dump")
    finally:
        out.close()


def _stream_directory(ctx: RunContext, argv: list[str], key: str, staging: Path) -> Any:
    """Directory format: ``pg_dump -Fd -j`` into local staging, then a tar stream into storage."""
    dump_dir = staging / "dump"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        done = subprocess.run([*argv, "-f", str(dump_dir)], capture_output=True, env=ctx.db.tool_env())
        if done.returncode != 0:
            raise BackupError(f"pg_dump exited {done.returncode}: "
                              f"{ctx.redact(done.stderr.decode(errors='replace').strip())}")
        size = sum(p.stat().st_size for p in dump_dir.rglob("*") if p.is_file())
        r, w = os.pipe()
        with open(r, "rb") as reader, open(w, "wb") as writer:
            t = threading.Thread(target=_tar_dir, args=(dump_dir, writer), daemon=True)
            t.start()
            try:
                stored = ctx.storage.put_stream(key, reader, size + 1024 * 1024)
            finally:
                reader.close()
                t.join()
        return stored
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _dump_in_snapshot(ctx: RunContext, compress: int, directory: bool, key: str) -> tuple[Any, dict[str, int], int]:
    db, bcfg = ctx.db, ctx.cfg.backup
    with db.connect() as snap:
        snap.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        # The row counts run beside pg_dump: one backend, no parallel workers stealing its CPU.
        snap.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        row = snap.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        snapshot = str(row[0])
        db_size = _database_size(snap)
        argv = [db.tool("pg_dump"), f"-Z{compress}", f"--snapshot={snapshot}", "--no-password", db.dbname]
        # Row counts are taken in the same snapshot (the connection is this thread's only until the dump is
        # stored). With compression, pg_dump is bound by compressing in its own process and the counts run
        # beside it on the otherwise idle server; uncompressed, the dump is bound by the server's backend and
        # the upload, so the counts wait for pg_dump's last byte and overlap the upload's completion instead.
        dumped = threading.Event()
        after_dump = compress == 0 and not directory
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pitstop-count") as counter:
            counting = counter.submit(_count_when, snap, dumped if after_dump else None)
            try:
                if directory:
                    staging = ctx.cfg.resolve(bcfg.staging_dir) / ctx.run_id
                    stored = _stream_directory(ctx, [*argv[:1], "-Fd", f"-j{bcfg.jobs}", *argv[1:]], key, staging)
                else:
                    stored = _stream_dump(ctx, [*argv[:1], "-Fc", *argv[1:]], key, db_size, dumped)
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
            counts = counting.result()
        snap.execute("COMMIT")
    return stored, counts, db_size


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
    stored, counts, db_size = call(ctx, "backup", _dump_in_snapshot, ctx, compress, directory, key)
    if stored.size == 0:
        ctx.storage.delete(key)
        raise BackupError("pg_dump produced an empty dump")
    upload = dict(getattr(ctx.storage, "last_upload", {}) or {})
    retries = len(getattr(ctx.storage, "retries", []) or [])
    manifest = {"environment": ctx.cfg.name, "database": db.dbname, "server_version": server_version,
                "server_major": server_major, "pg_dump_major": dump_major, "format": bcfg.format,
                "compress": compress, "kind": backup_kind(ctx), "trigger": ctx.options.trigger.value,
                "runbook": ctx.runbook.name, "started_at": started, "finished_at": now_iso(),
                "duration_s": round(time.monotonic() - t0, 3), "database_size": db_size, "size": stored.size,
                "sha256": stored.sha256, "key": key, "location": stored.location, "upload": upload,
                "row_counts": counts, "run_id": ctx.run_id, "verified": False}
    ctx.storage.put_bytes(backup_key(ctx, ".manifest.json"), json.dumps(manifest, indent=2).encode())
    ctx.state["backup"] = dict(manifest)
    ctx.event("backup.created", location=stored.location, size=stored.size, sha256=stored.sha256,
              tables=len(counts), rows=sum(counts.values()), format=bcfg.format, kind=manifest["kind"],
              database_size=db_size, duration_s=manifest["duration_s"], transient_retries=retries, **upload)
    return StepOutcome(changed=True, summary=f"{stored.size / 1024:.0f} KiB, {len(counts)} tables, sha256 "
                       f"{stored.sha256[:12]}…", data={"backup": manifest})


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
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
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
            restored = count_rows(conn)
    finally:
        with server.connect("postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
    expected = backup["row_counts"]
    diffs = {t: {"manifest": expected.get(t), "restored": restored.get(t)}
             for t in sorted(set(expected) | set(restored)) if expected.get(t) != restored.get(t)}
    evidence = {"tables": len(restored), "rows": sum(restored.values()), "row_counts": restored,
                "duration_s": round(time.monotonic() - t0, 3), "sha256": backup["sha256"], "size": backup["size"],
                "differences": diffs, **toc}
    if diffs:
        raise BackupError(f"restored row counts differ from the manifest in {len(diffs)} table(s): "
                          + ", ".join(list(diffs)[:5]))
    return evidence


@step("backup.verify", params=VerifyParams, placement=Placement.OUTSIDE, target=Target.DATABASE)
def backup_verify(ctx: RunContext, params: VerifyParams) -> StepOutcome:
    """Restore this run's backup into a scratch database and compare size, checksum and row counts."""
    backup = ctx.state.get("backup")
    if not backup:
        raise BackupError("no backup from this run to verify (backup.postgres must come first)")
    t0 = time.monotonic()
    try:
        # a lost connection (the scratch database's, pg_restore's or the admin one) redoes the verification
        evidence = call(ctx, "verify", verify_backup, ctx, backup)
    except PitstopError as exc:
        ctx.event("backup.verify_failed", location=backup["location"], error=ctx.redact(str(exc)),
                  duration_s=round(time.monotonic() - t0, 3))
        raise
    ctx.event("backup.verified", location=backup["location"], **evidence)
    backup["verified"] = True
    backup["verification"] = {k: v for k, v in evidence.items() if k != "row_counts"}
    manifest = {k: v for k, v in backup.items()}
    ctx.storage.put_bytes(backup_key(ctx, ".manifest.json"), json.dumps(manifest, indent=2).encode())
    return StepOutcome(changed=False, summary=f"restored {evidence['rows']} rows in {evidence['tables']} tables, "
                       "counts, size and SHA-256 match", data={"verification": backup["verification"]})


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
