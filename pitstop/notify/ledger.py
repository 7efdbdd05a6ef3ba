"""The ledger of sent notices: exactly one sender per notice, proof of every delivery.

Every notice delivery has a key (window, notice, channel). Under that key the ledger holds
immutable records, each written with an **atomic create-if-absent**:

* ``claim-NNNN.json`` — a sender takes attempt N (who, when). Only one process can create it:
  a hard ``link`` of a fully written temporary file on a local/NFS directory, ``PutObject(IfNoneMatch='*')`` on S3.
* ``done-NNNN.json`` — the outcome of attempt N: ``sent`` (final), ``failed`` (the next run
  claims N+1 and retries) or ``abandoned`` (at-most-once recovery, see below).

Two concurrent ``send-due`` calls race for the same ``claim-NNNN``; the loser skips the notice, so
a double trigger never duplicates. A crash between sending and writing ``done-N`` leaves a claim
without outcome. Once its lease expires (or its process is gone, on the same host) the recovery
follows ``notifications.notices.delivery``:

* ``at-least-once`` (default): claim N+1 and send again. The notice is never lost; in the rare
  crash-after-send case a recipient gets it twice, with the same ``X-Pitstop-Notice-Id``/reference
  so mail rules and webhooks can drop the copy. We choose this side because a missing "48 hours
  ahead" notice breaks the lead-time promise to users and blocks the run, a duplicate only annoys.
* ``at-most-once``: write ``done-N`` = ``abandoned`` and never resend (the plan shows it).

Takeover is itself a create-if-absent of ``claim-(N+1)``, so two recovering senders cannot both win.
"""

from __future__ import annotations

import abc
import errno
import json
import os
import socket
import uuid
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..config import EnvironmentConfig


class LedgerStore(abc.ABC):
    @abc.abstractmethod
    def create(self, name: str, data: bytes) -> bool:
        """Create ``name`` with ``data`` unless it exists. True if this call created it."""

    @abc.abstractmethod
    def read(self, name: str) -> bytes: ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]: ...


class LocalLedgerStore(LedgerStore):
    def __init__(self, root: Path):
        self.root = root

    def create(self, name: str, data: bytes) -> bool:
        """Write a private temporary file, fsync it, then ``link`` it to ``name``: the link is the atomic
        create-if-absent, and a reader never sees the record before its whole content is there."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        out = [p.relative_to(self.root).as_posix() for p in self.root.rglob("*.json")]
        return sorted(n for n in out if n.startswith(prefix))


class S3LedgerStore(LedgerStore):
    """S3 conditional writes: ``PutObject`` with ``IfNoneMatch='*'`` fails with 412 if the key exists."""

    def __init__(self, client: Any, bucket: str, prefix: str):
        self.client, self.bucket, self.prefix = client, bucket, prefix.rstrip("/") + "/"

    def create(self, name: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data, IfNoneMatch="*")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return False
            raise
        return True

    def read(self, name: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read())

    def list(self, prefix: str = "") -> list[str]:
        names: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                          Prefix=self.prefix + prefix):
            names += [o["Key"][len(self.prefix):] for o in page.get("Contents", [])]
        return sorted(names)


def open_ledger_store(cfg: EnvironmentConfig) -> LedgerStore:
    """S3 when the environment's storage is S3 (shared by every worker), else the state directory."""
    st = cfg.storage
    if st.kind == "s3" and st.bucket:
        import boto3

        kw: dict[str, Any] = {"endpoint_url": st.endpoint_url, "region_name": st.region}
        if st.access_key_env and st.secret_key_env:
            kw["aws_access_key_id"] = os.environ.get(st.access_key_env)
            kw["aws_secret_access_key"] = os.environ.get(st.secret_key_env)
        prefix = "/".join(p for p in (st.prefix.strip("/"), "notices", cfg.name, "ledger") if p)
        return S3LedgerStore(boto3.client("s3", **kw), st.bucket, prefix)
    return LocalLedgerStore(cfg.state_path / "notices" / "ledger")


class KeyState(StrEnum):
    NEW = "new"
    SENT = "sent"
    FAILED = "failed"  # last attempt failed: retry
    IN_FLIGHT = "in_flight"
    STALE = "stale"  # claimed, no outcome, lease over: the sender crashed
    ABANDONED = "abandoned"


class KeyStatus(BaseModel):
    key: str
    state: KeyState
    attempts: int = 0
    sent_at: str | None = None
    record: dict[str, Any] = {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


class Ledger:
    def __init__(self, store: LedgerStore, lease: timedelta, delivery: str = "at-least-once"):
        self.store, self.lease, self.delivery = store, lease, delivery
        self.host = socket.gethostname()

    def _records(self, key: str) -> dict[str, dict[str, Any]]:
        out = {}
        for name in self.store.list(key + "/"):
            try:
                out[name.rsplit("/", 1)[1]] = json.loads(self.store.read(name))
            except (ValueError, OSError):
                out[name.rsplit("/", 1)[1]] = {}  # being written right now
        return out

    def status(self, key: str, now: datetime) -> KeyStatus:
        recs = self._records(key)
        claims = sorted(n for n in recs if n.startswith("claim-"))
        for name, rec in recs.items():
            if name.startswith("done-") and rec.get("status") == "sent":
                return KeyStatus(key=key, state=KeyState.SENT, attempts=len(claims), sent_at=rec.get("at"),
                                 record=rec)
        if not claims:
            return KeyStatus(key=key, state=KeyState.NEW)
        last = claims[-1]
        n = int(last[6:10])
        done = recs.get(f"done-{n:04d}.json")
        if done is not None:
            state = KeyState.ABANDONED if done.get("status") == "abandoned" else KeyState.FAILED
            return KeyStatus(key=key, state=state, attempts=n, record=done)
        claim = recs[last]
        return KeyStatus(key=key, state=KeyState.STALE if self._stale(claim, now) else KeyState.IN_FLIGHT,
                         attempts=n, record=claim)

    def _stale(self, claim: dict[str, Any], now: datetime) -> bool:
        if not claim:
            return False
        if claim.get("host") == self.host and not _pid_alive(int(claim.get("pid", 0)) or -1):
            return True
        try:
            at = datetime.fromisoformat(claim["at"])
        except (KeyError, ValueError):
            return True
        return now - at > self.lease

    def claim(self, key: str, now: datetime, info: dict[str, Any]) -> int | None:
        """Try to become the sender of ``key``. Returns the attempt number, or None if not ours."""
        st = self.status(key, now)
        if st.state in (KeyState.SENT, KeyState.IN_FLIGHT, KeyState.ABANDONED):
            return None
        if st.state == KeyState.STALE and self.delivery == "at-most-once":
            self.finish(key, st.attempts, now, "abandoned", error="sender crashed; at-most-once: not resent")
            return None
        n = st.attempts + 1
        rec = {**info, "at": now.isoformat(), "host": self.host, "pid": os.getpid(), "attempt": n,
               "takeover_of": st.attempts if st.state == KeyState.STALE else None}
        data = json.dumps(rec, default=str, sort_keys=True).encode()
        return n if self.store.create(f"{key}/claim-{n:04d}.json", data) else None

    def finish(self, key: str, attempt: int, now: datetime, status: str, **detail: Any) -> bool:
        rec = {"status": status, "at": now.isoformat(), "attempt": attempt, **detail}
        return self.store.create(f"{key}/done-{attempt:04d}.json",
                                 json.dumps(rec, default=str, sort_keys=True).encode())

    def keys(self) -> list[str]:
        return sorted({n.split("/", 1)[0] for n in self.store.list() if "/" in n})

    def first_claim(self, key: str) -> dict[str, Any]:
        try:
            return dict(json.loads(self.store.read(f"{key}/claim-0001.json")))
        except (OSError, ValueError, KeyError):
            return {}


def open_ledger(cfg: EnvironmentConfig) -> Ledger:
    n = cfg.notifications.notices
    return Ledger(open_ledger_store(cfg), n.claim_lease, n.delivery)
