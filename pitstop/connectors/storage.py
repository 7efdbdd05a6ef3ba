"""Backup and report storage: a local (or NFS) directory, or S3.

Objects are written from a stream; the SHA-256 and size are computed on the way through, so a dump
never needs a temporary file. Local writes are atomic (temporary name, fsync, rename); local files are
created 0600 in 0700 directories whatever the umask (they hold dumps and row archives).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..config import EnvironmentConfig
from ..errors import ConnectorError
from ..fsmodes import private_dir
from .store import Storage, StoredObject

__all__ = ["CHUNK", "LocalStorage", "Storage", "StoredObject", "iter_chunks", "open_storage"]

CHUNK = 1024 * 1024


class LocalStorage(Storage):
    def __init__(self, root: Path):
        self.root = root
        private_dir(self.root)

    def _path(self, key: str) -> Path:
        p = (self.root / key).resolve()
        if self.root.resolve() not in p.parents:
            raise ConnectorError(f"storage key {key!r} escapes {self.root}")
        return p

    def location(self, key: str) -> str:
        return str(self._path(key))

    def _private_parents(self, target: Path) -> None:
        """Every directory from below the root down to ``target``'s: 0700, including ones an older
        version or a lax umask left open (the root itself is the operator's: made 0700 only when new)."""
        private_dir(target.parent)
        root = self.root.resolve()
        for d in (target.parent, *target.parent.parents):
            if d == root or root not in d.parents:
                break
            st = d.lstat()
            if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
                with contextlib.suppress(OSError):  # e.g. NFS without the right to: the files are 0600 anyway
                    d.chmod(0o700)

    def put_stream(self, key: str, stream: BinaryIO, size_hint: int | None = None) -> StoredObject:
        target = self._path(key)
        self._private_parents(target)
        tmp = target.with_name(f".{target.name}.partial")
        digest = hashlib.sha256()
        size = 0
        try:
            # a leftover of an interrupted write may have any mode: never reuse it, create the file 0600
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            os.fchmod(fd, 0o600)  # whatever the umask
            with os.fdopen(fd, "wb") as out:
                for chunk in iter(lambda: stream.read(CHUNK), b""):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
            _fsync_dir(target.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return StoredObject(key=key, location=str(target), size=size, sha256=digest.hexdigest())

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def list(self, prefix: str = "") -> list[str]:
        out = []
        for p in self.root.rglob("*"):
            if p.is_file() and not p.name.endswith(".partial"):
                key = p.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    out.append(key)
        return sorted(out)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        root = self.root.resolve()
        for parent in path.parents:  # drop directories the delete left empty
            if parent == root or root not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (on filesystems that support fsync on directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def iter_chunks(stream: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    return iter(lambda: stream.read(size), b"")


def open_storage(cfg: EnvironmentConfig) -> Storage:
    if cfg.storage.kind == "local":
        return LocalStorage(cfg.resolve(cfg.storage.path))
    from .s3 import S3Storage  # boto3 is imported only when S3 is configured

    return S3Storage(cfg.storage)
