"""Files pitstop writes are its own: run folders, reports, audit logs, dumps and row archives hold
production data and must not be readable by other local users, whatever the umask.

* :func:`private_umask` is entered by the entry points (the CLI, the flows) for the whole command:
  every file and directory created meanwhile, by pitstop or a library, is 0600/0700 at most;
* :func:`private_dir`, :func:`write_private` and :func:`private_opener` (``open(path, "a",
  opener=private_opener)``) set the modes explicitly where pitstop creates its folders and files, so
  a caller that embeds pitstop without the entry points gets the same; files are never opened
  through a symlink (``O_NOFOLLOW``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

PRIVATE_UMASK = 0o077


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    old = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def private_dir(path: Path) -> Path:
    """``path`` (and missing parents) as directories only the owner can enter. The leaf is made
    private even if it existed (a run folder reopened by resume); existing parents are left alone."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for p in {path, *missing}:
        with contextlib.suppress(OSError):
            if not p.is_symlink():
                p.chmod(0o700)
    return path


def private_file(path: Path) -> Path:
    """Make an existing file readable by its owner only."""
    with contextlib.suppress(OSError):
        if not path.is_symlink():
            path.chmod(0o600)
    return path


def private_opener(path: str | os.PathLike[str], flags: int) -> int:
    """An ``opener`` for :func:`open`: created 0600 whatever the umask, an existing file made 0600
    before a byte is written, and a symlink in its place refused (``O_NOFOLLOW``)."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    if flags & (os.O_WRONLY | os.O_RDWR):
        try:
            os.fchmod(fd, 0o600)
        except OSError:
            os.close(fd)
            raise
    return fd


def write_private(path: Path, data: bytes | str) -> Path:
    """Write ``path`` created 0600 (never briefly readable by others, never through a link)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with open(path, "wb", opener=private_opener) as fh:
        fh.write(raw)
    return path
