"""Restoring a stored dump into PostgreSQL: checked first, then handed to ``pg_restore``.

Used by ``backup.verify`` (restore into a scratch database) and ``pitstop restore`` (real recovery).
The object is staged privately while it is hashed; ``pg_restore`` reads it only once its size and
SHA-256 match the manifest (listing and retention: :mod:`pitstop.backup.catalog`). A restore target is a
:class:`PgServer`: the configured server or any conninfo/URI; credentials reach ``pg_restore`` through
libpq environment variables, never argv.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ..config import BackupConfig
from ..connectors.postgres import Database
from ..connectors.storage import Storage
from ..errors import BackupError, ConnectorError, PitstopError
from ..fsmodes import PRIVATE_UMASK, private_dir
from .contents import Contents

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
        hint = (" — the dump's owners and grantees must exist as roles on the target server (create them first, "
                "e.g. from `pg_dumpall --roles-only`), or restore without --keep-owner"
                if re.search(r'role "[^"]*" does not exist', detail) else "")
        raise BackupError(f"pg_restore of {key} failed (exit {seen.code}): {detail}{hint}")


def create_database(admin: Any, dbname: str) -> None:
    """``CREATE DATABASE`` for a restore: from ``template0``, so nothing added to ``template1`` (tables, rows,
    extensions) ends up in the restored database beside the dump's contents."""
    from psycopg import errors as pg_errors
    from psycopg import sql

    try:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(dbname)))
    except pg_errors.InsufficientPrivilege:
        role = admin.info.user
        raise BackupError(f"role {role!r} may not create databases, and a restore (or its verification) needs a new "
                          f"one: grant it (ALTER ROLE {role} CREATEDB) or point database.verify_server / --into at "
                          "a server and role that can") from None


def precheck_size(storage: Storage, manifest: dict[str, Any]) -> None:
    """The stored object's size against the manifest before any of it is read: a swapped or truncated
    object is refused at once (its checksum is judged anyway, once it is staged)."""
    key, want = manifest["key"], int(manifest.get("size") or 0)
    try:
        have = storage.size(key)
    except FileNotFoundError:
        raise BackupError(f"backup {key} is missing from storage ({storage.location(key)})") from None
    except (OSError, PitstopError) as exc:
        raise BackupError(f"cannot read backup {key} in storage: {exc}") from None
    if want and have != want:
        if have == 0:
            check_header(b"", manifest.get("format", "custom"))
        with storage.open(key) as src:  # name a wrong format before a wrong size: the more specific cause
            check_header(src.read(512), manifest.get("format", "custom"))
        judge(key, StreamResult(have, "", 0, ""), {"size": want})


TOC_DATA = re.compile(r"^\d+; \d+ (\d+) TABLE DATA ", re.M)
TOC_BLOBS = re.compile(r"^\d+; \d+ \d+ (BLOBS|LARGE OBJECTS) ", re.M)


def _toc_name(text: str) -> str:
    """A name as ``pg_restore --list`` prints it: unquoted, newlines as spaces, empty as ``-``."""
    return text.replace("\r", " ").replace("\n", " ") or "-"


def toc_sanity(listing: str, expected: Contents) -> dict[str, Any]:
    """``pg_restore --list`` output: every table of the manifest must have a TABLE DATA entry.

    A TOC line reads ``<id>; 0 <table oid> TABLE DATA <schema> <table> <owner>`` with names unquoted, so a
    name is ambiguous there (``a b c`` is schema ``a b`` table ``c`` or schema ``a`` table ``b c``). The
    manifest records each table's OID in the source database, which the entry carries: an entry counts
    only when its OID and its printed names both match. Manifests without OIDs are matched by name.
    Large objects in the manifest need a BLOBS entry."""
    entries = [ln for ln in listing.splitlines() if ln and not ln.startswith(";")]
    if not entries:
        raise BackupError("pg_restore --list found no entries in the archive's table of contents")
    data = [(int(m.group(1)), ln[m.end():] + " ") for ln in entries if (m := TOC_DATA.match(ln))]
    missing = []
    for t in expected.tables:
        names = f"{_toc_name(t.schema_)} {_toc_name(t.name)} "
        if not any(rest.startswith(names) and (t.oid is None or oid == t.oid) for oid, rest in data):
            missing.append(f"{t.schema_}.{t.name}")
    if missing:
        raise BackupError(f"the archive's table of contents lacks data for {len(missing)} table(s): "
                          + ", ".join(sorted(missing)[:5]))
    if expected.large_objects and not any(TOC_BLOBS.match(ln) for ln in entries):
        raise BackupError(f"the archive's table of contents has no large objects; the manifest counts "
                          f"{expected.large_objects}")
    return {"toc_entries": len(entries), "toc_table_data": len(data)}


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
    precheck_size(storage, manifest)
    if fmt == "directory":
        return _restore_directory(server, storage, manifest, dbname, bcfg, staging, progress, no_owner)
    private_dir(staging)
    fd, name = tempfile.mkstemp(prefix="restore-", suffix=".dump", dir=staging)
    local = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, storage.open(key) as raw:
            src = _Hashing(raw, progress, key, int(manifest.get("size") or 0))
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
                                 text=True, env=env, umask=PRIVATE_UMASK)
        if listing.returncode != 0:
            tail = listing.stderr.strip().splitlines()[-1:] or ["no message"]
            raise BackupError(f"pg_restore --list cannot read the table of contents of {key}: {tail[0]}")
        evidence = toc_sanity(listing.stdout, Contents.from_manifest(manifest))
        done = subprocess.run(restore_argv(db, dbname, jobs=bcfg.jobs, no_owner=no_owner, source=str(local)),
                              capture_output=True, text=True, env=env, umask=PRIVATE_UMASK)
        judge(key, StreamResult(src.size, src.digest.hexdigest(), done.returncode, done.stderr.strip()), None)
        return evidence
    finally:
        local.unlink(missing_ok=True)


class _Hashing:
    """Hashes what is read; refuses to read past the manifest's size (a swapped, larger object never fills
    the staging disk)."""

    def __init__(self, src: BinaryIO, progress: Progress | None, key: str, limit: int = 0):
        self.src, self.progress, self.size, self.key, self.limit = src, progress, 0, key, limit
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.digest.update(data)
        self.size += len(data)
        if self.limit and self.size > self.limit:
            raise BackupError(f"backup {self.key} has more than the {self.limit} bytes the manifest says")
        if self.progress and data:
            self.progress(len(data))
        return data


def _extract_private(tar: tarfile.TarFile, target: Path) -> None:
    """Unpack a directory-format dump's tar: its directories 0700 and files 0600 (never briefly more), nothing
    but plain files and directories under ``dump/`` (no links, devices, absolute or ``..`` paths)."""
    for member in tar:
        parts = PurePosixPath(member.name).parts
        if not parts or parts[0] != "dump" or any(p in ("..", "") for p in parts) or member.name.startswith("/"):
            raise tarfile.TarError(f"member {member.name!r} is outside dump/")
        dest = target.joinpath(*parts)
        if member.isdir():
            private_dir(dest)
        elif member.isfile():
            private_dir(dest.parent)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as out:
                data = tar.extractfile(member)
                assert data is not None
                shutil.copyfileobj(data, out, CHUNK)
        else:
            raise tarfile.TarError(f"member {member.name!r} is neither a file nor a directory")


def _restore_directory(server: PgServer, storage: Storage, manifest: dict[str, Any], dbname: str,
                       bcfg: BackupConfig, staging: Path, progress: Progress | None, no_owner: bool) -> dict[str, Any]:
    key = manifest["key"]
    db = server.tools
    private_dir(staging)
    target = Path(tempfile.mkdtemp(prefix="restore-", dir=staging))  # 0700, this restore's own
    try:
        with storage.open(key) as raw:
            src = _Hashing(raw, progress, key, int(manifest.get("size") or 0))
            check_header(raw.peek(512)[:512] if hasattr(raw, "peek") else b"ustar", "directory")
            try:
                with tarfile.open(fileobj=src, mode="r|") as tar:  # type: ignore[call-overload]
                    _extract_private(tar, target)
            except (tarfile.TarError, EOFError, OSError) as exc:
                for _ in iter(lambda: src.read(CHUNK), b""):
                    pass
                judge(key, StreamResult(src.size, src.digest.hexdigest(), 1, f"unreadable tar: {exc}"), manifest)
            for _ in iter(lambda: src.read(CHUNK), b""):  # tar padding after the end marker
                pass
        judge(key, StreamResult(src.size, src.digest.hexdigest(), 0, ""), manifest)
        dump_dir = target / "dump"
        listed = subprocess.run(restore_argv(db, dbname, list_only=True, source=str(dump_dir)), capture_output=True,
                                text=True, env=server.env(dbname), umask=PRIVATE_UMASK)
        if listed.returncode != 0:
            raise BackupError(f"pg_restore --list cannot read {key}: {listed.stderr.strip()[-200:]}")
        evidence = toc_sanity(listed.stdout, Contents.from_manifest(manifest))
        done = subprocess.run(restore_argv(db, dbname, jobs=bcfg.jobs, no_owner=no_owner, source=str(dump_dir)),
                              capture_output=True, text=True, env=server.env(dbname), umask=PRIVATE_UMASK)
        judge(key, StreamResult(src.size, src.digest.hexdigest(), done.returncode, done.stderr.strip()), None)
        return evidence
    finally:
        shutil.rmtree(target, ignore_errors=True)
