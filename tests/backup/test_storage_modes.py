"""Dumps, row archives and every other storage file are 0600 in 0700 directories, whatever the umask.

In-process (the CLI's entry point runs under umask 077 anyway; an embedding caller may not): the local
store under umask 000 and 022, including directories an older version left open and a stale
``.partial`` file of an interrupted write; the directory-format dump's staging and the restore's
staging while they hold data. S3 objects are encrypted server-side unless a config turns it off.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from pitstop.backup.state import BackupState
from pitstop.connectors.storage import LocalStorage, StoredObject
from tests.backup.backup_helpers import s3_storage


@pytest.fixture(params=[0o000, 0o022], ids=["umask000", "umask022"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def exposed(root: Path) -> list[str]:
    """Files and directories under ``root`` that a group or other user can read, write or enter."""
    return [f"{p.relative_to(root)} {oct(stat.S_IMODE(p.lstat().st_mode))}" for p in [root, *root.rglob("*")]
            if stat.S_IMODE(p.lstat().st_mode) & 0o077]


def test_local_storage_files_are_private_under_any_umask(tmp_path: Path, umask: int) -> None:
    root = tmp_path / "storage"
    store = LocalStorage(root)
    store.put_bytes("backups/prod/r1/app.dump", b"PGDMP...")
    store.put_stream("archives/prod/public.events/batch-1.csv.gz", io.BytesIO(b"rows"))
    assert exposed(root) == []


def test_directories_and_partials_left_open_by_older_writes_are_closed(tmp_path: Path, umask: int) -> None:
    root = tmp_path / "storage"
    open_dir = root / "backups" / "prod" / "r2"
    open_dir.mkdir(parents=True, mode=0o755)
    for d in (root / "backups", root / "backups" / "prod", open_dir):
        d.chmod(0o755)
    stale = open_dir / ".app.dump.partial"
    stale.write_bytes(b"half a dump from an interrupted run")
    stale.chmod(0o644)
    store = LocalStorage(root)
    root.chmod(0o700)  # the root is the operator's; below it, the directories are pitstop's
    store.put_bytes("backups/prod/r2/app.dump", b"PGDMP...")
    assert (open_dir / "app.dump").read_bytes() == b"PGDMP..." and not stale.exists()
    assert exposed(root) == []


class Watching(LocalStorage):
    """A local store that looks at the staging directory whenever a dump passes through it."""

    def __init__(self, root: Path, staging: Path):
        super().__init__(root)
        self.staging = staging
        self.seen: list[str] = []
        self.looked = 0

    def _look(self) -> None:
        if self.staging.exists() and any(self.staging.rglob("*")):
            self.looked += 1
            self.seen += exposed(self.staging)

    def put_stream(self, key: str, stream: BinaryIO, size_hint: int | None = None) -> StoredObject:
        self._look()
        return super().put_stream(key, stream, size_hint)

    def open(self, key: str) -> BinaryIO:
        outer = self

        class Reader(io.RawIOBase):
            def __init__(self) -> None:
                self.src = LocalStorage.open(outer, key)

            def readable(self) -> bool:
                return True

            def readinto(self, b: Any) -> int:
                outer._look()
                data = self.src.read(len(b))
                b[:len(data)] = data
                return len(data)

            def close(self) -> None:
                self.src.close()
                super().close()

        return io.BufferedReader(Reader())  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["directory", "custom"])
def test_dump_and_restore_staging_is_private_under_any_umask(make_env: Any, ctx_for: Any, tmp_path: Path,
                                                              umask: int, fmt: str) -> None:
    from pitstop.backup.steps import BackupParams, VerifyParams, backup_postgres, backup_verify

    env = make_env(lambda c: c.setdefault("backup", {}).update(format=fmt))
    ctx = ctx_for(env)
    staging = ctx.cfg.resolve(ctx.cfg.backup.staging_dir)
    ctx._storage = watching = Watching(ctx.cfg.resolve(ctx.cfg.storage.path), staging)
    backup_postgres(ctx, BackupParams())
    backup_verify(ctx, VerifyParams())
    assert ctx.state.of(BackupState).backup["verified"] is True
    assert watching.looked > 0, "the staging directory was never seen holding data"
    assert watching.seen == []
    assert exposed(ctx.cfg.resolve(ctx.cfg.storage.path)) == []


def test_s3_objects_of_a_run_are_encrypted_by_default(make_env: Any, ctx_for: Any, moto_endpoint: str, bucket: str,
                                                      s3_client: Any) -> None:
    from pitstop.backup.steps import BackupParams, VerifyParams, backup_postgres, backup_verify

    ctx = ctx_for(make_env(lambda c: c.update(storage=s3_storage(moto_endpoint, bucket))))  # no SSE key given
    assert ctx.cfg.storage.server_side_encryption == "AES256"
    backup_postgres(ctx, BackupParams())
    backup_verify(ctx, VerifyParams())
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert any(k.endswith(".dump") for k in keys) and any(k.endswith(".manifest.json") for k in keys)
    assert {s3_client.head_object(Bucket=bucket, Key=k).get("ServerSideEncryption") for k in keys} == {"AES256"}


def test_an_endpoint_without_server_side_encryption_is_a_clear_permanent_error() -> None:
    import botocore.exceptions as bex

    from pitstop.config import StorageConfig
    from pitstop.connectors.s3 import S3Storage, is_transient

    exc = bex.ClientError({"Error": {"Code": "NotImplemented", "Message": "A header you provided implies "
                                     "functionality that is not implemented"},
                           "ResponseMetadata": {"HTTPStatusCode": 501}}, "PutObject")
    assert not is_transient(exc)  # not retried six times
    store = S3Storage(StorageConfig(kind="s3", bucket="b", endpoint_url="http://127.0.0.1:9"))
    msg = str(store._error("upload", "k", exc))
    assert "server_side_encryption: none" in msg and "NotImplemented" in msg
