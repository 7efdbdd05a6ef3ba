"""Backups after the fact: streaming a stored dump back into PostgreSQL, listing, retention.

Used by ``backup.verify`` (restore into a scratch database), ``pitstop restore`` (real recovery)
and ``pitstop backups list|prune``. A restore target is a :class:`PgServer`: the configured server
or any conninfo/URI; credentials reach ``pg_restore`` through libpq environment variables, never argv.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel

from .config import BackupConfig
from .connectors.postgres import Database
from .connectors.storage import Storage
from .errors import BackupError, ConnectorError

CHUNK = 1024 * 1024
MAGIC_CUSTOM = b"PGDMP"
Progress = Callable[[int], None]
_ENV_OF = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD",
           "sslmode": "PGSSLMODE", "connect_timeout": "PGCONNECT_TIMEOUT", "sslrootcert": "PGSSLROOTCERT"}


@dataclass
class PgServer:
    """Where to restore: libpq connection settings without a database name."""

    settings: dict[str, Any]
    tools: Database  # whose pg_restore binary to use

    @classmethod
    def configured(cls, db: Database) -> PgServer:
        info = db.conninfo()
        info.pop("dbname", None)
        return cls(info, db)

    @classmethod
    def from_dsn(cls, dsn: str, db: Database, default_db: str | None = None) -> tuple[PgServer, str]:
        """A server and database name from a conninfo string or URI."""
        try:
            info = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise BackupError(f"cannot parse the target connection string: {str(exc).splitlines()[0]}") from None
        dbname = str(info.pop("dbname", "") or default_db or "")
        if not dbname:
            raise BackupError("the target connection string names no database (dbname=...)")
        return cls(info, db), dbname

    def connect(self, dbname: str, autocommit: bool = False) -> psycopg.Connection:
        try:
            return psycopg.connect(**self.settings, dbname=dbname, autocommit=autocommit)
        except psycopg.OperationalError as exc:
            raise ConnectorError(f"cannot connect to PostgreSQL: {str(exc).strip()}") from None

    def env(self, dbname: str) -> dict[str, str]:
        env = {k: v for k, v in self.tools.tool_env(dbname).items() if not k.startswith("PG")}
        env.update({_ENV_OF[k]: str(v) for k, v in self.settings.items() if k in _ENV_OF and v is not None})
        env["PGDATABASE"] = dbname
        return env

    def describe(self, dbname: str) -> str:
        s = self.settings
        return f"{s.get('user', '')}@{s.get('host', '')}:{s.get('port', '')}/{dbname}"


# -- reading a stored dump -------------------------------------------------------------------------------
def check_header(head: bytes, fmt: str) -> None:
    """Refuse an empty object or one that is not a pg_dump archive of the expected format."""
    if not head:
        raise BackupError("the backup object is empty (0 bytes): the dump was never written completely")
    if fmt == "directory":
        if head[257:262] != b"ustar":
            raise BackupError(f"the backup object is not a tar of a directory-format dump (starts with "
                              f"{head[:24]!r})")
        return
    if not head.startswith(MAGIC_CUSTOM):
        looks = " — it looks like a plain SQL dump" if b"PostgreSQL database dump" in head[:200] \
            or head.lstrip().startswith(b"--") else ""
        raise BackupError(f"the backup object is not a pg_dump custom-format archive (no PGDMP header; starts "
                          f"with {head[:24]!r}){looks}")


@dataclass
class StreamResult:
    size: int
    sha256: str
    code: int
    stderr: str
    stdout: str = ""


def hash_object(storage: Storage, key: str) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with storage.open(key) as src:
        for chunk in iter(lambda: src.read(CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def judge(key: str, seen: StreamResult, expected: dict[str, Any] | None) -> None:
    """Name the most specific reason a stream is bad: size, then checksum, then pg_restore's error."""
    if expected:
        want = int(expected.get("size") or 0)
        if want and seen.size < want:
            raise BackupError(f"backup {key} is truncated: {seen.size} of {want} bytes")
        if want and seen.size != want:
            raise BackupError(f"backup {key} has {seen.size} bytes, the manifest says {want}")
        if expected.get("sha256") and seen.sha256 != expected["sha256"]:
            raise BackupError(f"backup {key} is corrupt: SHA-256 {seen.sha256[:16]}… does not match the "
                              f"manifest's {str(expected['sha256'])[:16]}… (bit rot or tampering)")
    if seen.code != 0:
        lines = seen.stderr.splitlines()
        # libpq's messages run over several lines ("server closed the connection unexpectedly / This probably
        # means ... / before or while processing the request."): name pg_restore's own error line
        errors = [ln for ln in lines if ln.startswith("pg_restore: error:")]
        detail = errors[0] if errors else (lines[-1] if lines else "no message")
        raise BackupError(f"pg_restore of {key} failed (exit {seen.code}): {detail}")


TOC_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA ", re.M)


def toc_sanity(listing: str, expected_tables: list[str]) -> dict[str, Any]:
    """``pg_restore --list`` output: every table of the manifest must have a TABLE DATA entry.

    The manifest names tables ``schema.table`` (leaf tables only: a partitioned parent has no data of
    its own). A TOC line reads ``<id>; <oid> <oid> TABLE DATA <schema> <table> <owner>`` with names
    unquoted, so names holding spaces are matched as a whole rather than split on blanks."""
    entries = [ln for ln in listing.splitlines() if ln and not ln.startswith(";")]
    data_lines = [ln[m.end():] + " " for ln in entries if (m := TOC_DATA.match(ln))]
    if not entries:
        raise BackupError("pg_restore --list found no entries in the archive's table of contents")
    missing = []
    for name in expected_tables:
        schema, _, table = name.partition(".")
        if not any(ln.startswith(f"{schema} {table} ") for ln in data_lines):
            missing.append(name)
    if missing:
        raise BackupError(f"the archive's table of contents lacks data for {len(missing)} table(s): "
                          + ", ".join(sorted(missing)[:5]))
    return {"toc_entries": len(entries), "toc_table_data": len(data_lines)}


def restore_argv(db: Database, dbname: str, *, jobs: int = 1, no_owner: bool = True, source: str | None = None,
                 list_only: bool = False) -> list[str]:
    argv = [db.tool("pg_restore"), "--no-password"]
    if list_only:
        argv.append("--list")
    else:
        argv += ["--exit-on-error", "-d", dbname]
        if no_owner:
            argv += ["--no-owner", "--no-privileges"]
        if jobs > 1 and source:
            argv += ["-j", str(jobs)]
    if source:
        argv.append(source)
    return argv


def restore(server: PgServer, storage: Storage, manifest: dict[str, Any], dbname: str, *,
            bcfg: BackupConfig, staging: Path, progress: Progress | None = None,
            no_owner: bool = True) -> dict[str, Any]:
    """Restore the dump a manifest describes into ``dbname`` (which exists and is empty).

    The stored object is first copied to a private staging file while it is hashed; only when its size
    and SHA-256 match the manifest does ``pg_restore`` read it (an archive swapped in storage is refused
    before any of its SQL can run, and the bytes checked are the bytes restored: no second download).
    Returns evidence: the TOC sanity figures. Raises :class:`BackupError` naming what is wrong.
    """
    key, fmt = manifest["key"], manifest.get("format", "custom")
    db, env = server.tools, server.env(dbname)
    if fmt == "directory":
        return _restore_directory(server, storage, manifest, dbname, bcfg, staging, progress, no_owner)
    private_dir(staging)
    fd, name = tempfile.mkstemp(prefix="restore-", suffix=".dump", dir=staging)
    local = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, storage.open(key) as raw:
            src = _Hashing(raw, progress)
            first = True
            for chunk in iter(lambda: src.read(CHUNK), b""):
                if first:
                    check_header(chunk, fmt)
                    first = False
                out.write(chunk)
            if first:
                check_header(b"", fmt)
        judge(key, StreamResult(src.size, src.digest.hexdigest(), 0, ""), manifest)
        listing = subprocess.run(restore_argv(db, dbname, list_only=True, source=str(local)), capture_output=True,
                                 text=True, env=env)
        if listing.returncode != 0:
            tail = listing.stderr.strip().splitlines()[-1:] or ["no message"]
            raise BackupError(f"pg_restore --list cannot read the table of contents of {key}: {tail[0]}")
        evidence = toc_sanity(listing.stdout, list(manifest.get("row_counts", {})))
        done = subprocess.run(restore_argv(db, dbname, jobs=bcfg.jobs, no_owner=no_owner, source=str(local)),
                              capture_output=True, text=True, env=env)
        judge(key, StreamResult(src.size, src.digest.hexdigest(), done.returncode, done.stderr.strip()), None)
        return evidence
    finally:
        local.unlink(missing_ok=True)


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (created 0700 whatever the umask)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


class _Hashing:
    def __init__(self, src: BinaryIO, progress: Progress | None):
        self.src, self.progress, self.size = src, progress, 0
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.digest.update(data)
        self.size += len(data)
        if self.progress and data:
            self.progress(len(data))
        return data


def _restore_directory(server: PgServer, storage: Storage, manifest: dict[str, Any], dbname: str,
                       bcfg: BackupConfig, staging: Path, progress: Progress | None, no_owner: bool) -> dict[str, Any]:
    key = manifest["key"]
    db = server.tools
    target = staging / f"restore-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    shutil.rmtree(target, ignore_errors=True)
    private_dir(staging)
    target.mkdir(mode=0o700)
    try:
        with storage.open(key) as raw:
            src = _Hashing(raw, progress)
            check_header(raw.peek(512)[:512] if hasattr(raw, "peek") else b"ustar", "directory")
            try:
                with tarfile.open(fileobj=src, mode="r|") as tar:  # type: ignore[call-overload]
                    tar.extractall(target, filter="data")
            except (tarfile.TarError, EOFError, OSError) as exc:
                for _ in iter(lambda: src.read(CHUNK), b""):
                    pass
                judge(key, StreamResult(src.size, src.digest.hexdigest(), 1, f"unreadable tar: {exc}"), manifest)
            for _ in iter(lambda: src.read(CHUNK), b""):  # tar padding after the end marker
                pass
        judge(key, StreamResult(src.size, src.digest.hexdigest(), 0, ""), manifest)
        dump_dir = target / "dump"
        listed = subprocess.run(restore_argv(db, dbname, list_only=True, source=str(dump_dir)), capture_output=True,
                                text=True, env=server.env(dbname))
        if listed.returncode != 0:
            raise BackupError(f"pg_restore --list cannot read {key}: {listed.stderr.strip()[-200:]}")
        evidence = toc_sanity(listed.stdout, list(manifest.get("row_counts", {})))
        done = subprocess.run(restore_argv(db, dbname, jobs=bcfg.jobs, no_owner=no_owner, source=str(dump_dir)),
                              capture_output=True, text=True, env=server.env(dbname))
        judge(key, StreamResult(src.size, src.digest.hexdigest(), done.returncode, done.stderr.strip()), None)
        return evidence
    finally:
        shutil.rmtree(target, ignore_errors=True)


# -- listing and retention ----------------------------------------------------------------------------------
class BackupEntry(BaseModel):
    run_id: str
    kind: str
    trigger: str = ""
    database: str
    started_at: str
    size: int
    sha256: str
    key: str
    manifest_key: str
    location: str
    format: str = "custom"
    verified: bool = False


def env_prefix(env: str) -> str:
    return f"backups/{env}/"


def list_backups(storage: Storage, env: str) -> list[BackupEntry]:
    """Every backup of ``env`` with a readable manifest, newest first."""
    out = []
    for mkey in storage.list(env_prefix(env)):
        if not mkey.endswith(".manifest.json"):
            continue
        try:
            m = json.loads(storage.get_bytes(mkey))
            out.append(BackupEntry(manifest_key=mkey, **{k: v for k, v in m.items() if k in BackupEntry.model_fields}))
        except (ValueError, TypeError):
            continue  # a damaged manifest is not a backup anyone can restore from
    return sorted(out, key=lambda b: (b.started_at, b.run_id), reverse=True)


def load_manifest(storage: Storage, env: str, run_id: str) -> dict[str, Any]:
    for b in list_backups(storage, env):
        if b.run_id == run_id:
            return dict(json.loads(storage.get_bytes(b.manifest_key)))
    raise BackupError(f"no backup of run {run_id!r} in {storage.location(env_prefix(env))} "
                      "(see `pitstop backups list`)")


def plan_prune(backups: list[BackupEntry], bcfg: BackupConfig, protect: set[str] | None = None) -> list[BackupEntry]:
    """Backups to delete: beyond keep_<kind> newest of each kind; never the newest verified one."""
    keep = {"monthly": bcfg.keep_monthly, "quarterly": bcfg.keep_quarterly, "emergency": bcfg.keep_emergency}
    newest_verified = next((b.run_id for b in backups if b.verified), None)
    seen: dict[str, int] = {}
    doomed = []
    for b in backups:  # newest first
        seen[b.kind] = seen.get(b.kind, 0) + 1
        if seen[b.kind] <= keep.get(b.kind, bcfg.keep_custom):
            continue
        if b.run_id == newest_verified or b.run_id in (protect or set()):
            continue
        doomed.append(b)
    return doomed


def delete_backup(storage: Storage, env: str, run_id: str) -> int:
    """Delete every object of one run's backup (dump first, manifest last). Returns objects deleted."""
    keys = storage.list(f"{env_prefix(env)}{run_id}/")
    keys.sort(key=lambda k: k.endswith(".manifest.json"))
    for k in keys:
        storage.delete(k)
    return len(keys)
