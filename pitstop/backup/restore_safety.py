"""``pitstop restore``'s safety: which databases may be restored into, the manifest's provenance, and a
restore that either completes or leaves nothing of its own behind.

* **Targets**: never ``template0``/``template1``/``postgres`` (every later ``CREATE DATABASE`` would
  inherit the restored rows, or the server's maintenance database is overwritten), never the
  environment's own database (same server, told by its system identifier, not by how the address is
  spelled), never an existing database unless ``--replace`` with ``--reason``.
* **Replace** restores into a new database first; only when that restore has passed every check is the
  existing database dropped and the new one renamed in its place. A failed restore leaves the existing
  database as it was.
* **Failure** drops the database this command created, and only that one.
* **Provenance**: the manifest read from storage must be one the run recorded in its hash-chained audit
  log (SHA-256 of the manifest's bytes, and the dump's size and SHA-256) when the run folder is here.
* **Record**: every restore that got as far as creating its database, passed or failed, is a line in the
  state directory's ``restores.jsonl``; a restored database carries a ``COMMENT`` naming run, dump and
  reason.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg import sql

from ..audit import now_iso, read_events, verify_chain
from ..errors import BackupError, InputError
from .restore import PgServer, create_database

PROTECTED_DATABASES = ("template0", "template1", "postgres")
MANIFEST_HASH = "manifest_sha256"


def check_provenance(log: Path, run: str, manifest: dict[str, Any], raw: bytes) -> str:
    """Compare a manifest from storage with what run ``run`` recorded in its audit log (``log``); returns
    what was checked. The manifest sits in storage next to the dump: whoever can swap one can rewrite the
    other, so the audit log (hash-chained, in the run folder) is the reference."""
    if broken := verify_chain(log):
        raise BackupError(f"the audit log of run {run} is not intact ({broken}): its backup is not trusted")
    events = read_events(log)
    created = [e["data"] for e in events if e["kind"] == "backup.created"]
    if not created:
        raise BackupError(f"the audit log of run {run} records no backup: the manifest in storage is not "
                          "one this run wrote; nothing was restored")
    last = created[-1]
    if (last.get("sha256"), last.get("size")) != (manifest.get("sha256"), manifest.get("size")):
        raise BackupError(f"the backup manifest of run {run} in storage does not match what the run recorded "
                          f"(SHA-256 {str(last.get('sha256'))[:16]}…, {last.get('size')} bytes): "
                          "the dump or its manifest was replaced; nothing was restored")
    hashes = [str(e["data"][MANIFEST_HASH]) for e in events
              if e["kind"] in ("backup.created", "backup.verified") and e["data"].get(MANIFEST_HASH)]
    if not hashes:
        return "dump size and SHA-256 (the run predates manifest hashes)"
    got = hashlib.sha256(raw).hexdigest()
    if got not in hashes:
        raise BackupError(f"the backup manifest of run {run} in storage is not one the run wrote (SHA-256 "
                          f"{got[:16]}…, the audit log says {hashes[-1][:16]}…): it was altered; nothing was "
                          "restored")
    return "manifest SHA-256, dump size and SHA-256"


def system_identifier(server: PgServer, dbname: str) -> int | None:
    try:
        with server.connect(dbname) as conn:
            row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
            return int(row[0]) if row else None
    except Exception:  # noqa: BLE001 - unknown: the caller refuses rather than guesses
        return None


def refuse_target(server: PgServer, dbname: str, source: PgServer, source_db: str) -> None:
    """Exit 2 for a target that is never restored into: templates, ``postgres``, the environment's own
    database (on the same cluster, however its address is written)."""
    if dbname in PROTECTED_DATABASES:
        raise InputError(f"refusing to restore into {dbname!r}: template and maintenance databases are never "
                         "restore targets (name a new database with --into)")
    if dbname != source_db:
        return
    if server.describe(dbname) != source.describe(source_db):
        theirs, ours = system_identifier(server, "postgres"), system_identifier(source, source_db)
        if theirs is None or ours is None:
            raise InputError(f"refusing to restore into {dbname!r}: it has the name of the environment's own "
                             "database and the target server's identity cannot be read (pg_control_system()) "
                             "to tell them apart; name a new database with --into")
        if theirs != ours:
            return
    raise InputError(f"refusing to restore into {dbname!r}: it is the environment's own database (same "
                     "cluster, however its address is written); name a new database with --into")


@dataclass
class Attempt:
    """One restore into ``dbname``: the database this command created (``work``) and what happened."""

    server: PgServer
    dbname: str
    replace: bool
    work: str = ""  # the database this command created (dropped again on failure)
    existed: bool = False
    swapped: bool = False
    finished: bool = False
    notes: list[str] = field(default_factory=list)

    def create(self) -> None:
        import psycopg

        with self.server.connect("postgres", autocommit=True) as admin:
            self.existed = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                         (self.dbname,)).fetchone() is not None
            if self.existed and not self.replace:
                raise InputError(f"database {self.dbname!r} already exists: restore into a new database, or "
                                 "pass --replace --reason '...' to replace it")
            name = f"pitstop_restore_{uuid.uuid4().hex[:12]}" if self.existed else self.dbname
            try:
                create_database(admin, name)
            except psycopg.errors.DuplicateDatabase:
                raise InputError(f"database {name!r} already exists (created meanwhile by someone else): "
                                 "restore into a new database") from None
            self.work = name

    def finish(self, comment: str) -> None:
        """Put the restored database in place (replace: drop the old one, rename the new) and label it."""
        with self.server.connect("postgres", autocommit=True) as admin:
            if self.existed:
                admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(self.dbname)))
                self.swapped = True  # from here the restored copy is the only one: never dropped by us
                admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(self.work),
                                                                               sql.Identifier(self.dbname)))
                self.work = self.dbname
            self.finished = True  # in place: from here nothing drops it
            try:
                admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(self.dbname),
                                                                             sql.Literal(comment)))
            except Exception as exc:  # noqa: BLE001 - the restore is complete; the label is a courtesy
                self.notes.append(f"could not label the database with a comment: {str(exc).strip()}")

    def abandon(self) -> str:
        """After a failure: drop what this command created, never anything else. Returns what was done."""
        if not self.work:
            return "no database was created"
        if self.finished:
            return f"database {self.dbname!r} was restored and is kept"
        if self.swapped:
            return (f"the previous {self.dbname!r} was dropped; the restored copy is database {self.work!r} "
                    f"(rename it to {self.dbname!r})")
        try:
            with self.server.connect("postgres", autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.work)))
        except Exception as exc:  # noqa: BLE001 - the restore's own error is the one to report
            return f"could not drop the half-restored database {self.work!r}: {exc}"
        kept = f"; the existing {self.dbname!r} was left as it was" if self.existed else ""
        return f"dropped the database it had created ({self.work!r}){kept}"


def journal(path: Path, entry: dict[str, Any]) -> None:
    """Append one restore record to ``restores.jsonl`` (0600, never through a link)."""
    from ..fsmodes import private_dir

    private_dir(path.parent)
    record = {"at": now_iso(), "user": _user(), "host": socket.gethostname(), **entry}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=str) + "\n")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (containers): the uid says who
        return f"uid {os.getuid()}"
