"""Files pitstop writes are its own: run folders, reports, audit logs, dumps and row archives hold
production data and must not be readable by other local users, whatever the umask.

* :func:`private_umask` is entered by the entry points (the CLI, the flows) for the whole command:
  every file and directory created meanwhile, by pitstop or a library, is 0600/0700 at most;
* :func:`private_dir` and :func:`private_file` set the modes explicitly where pitstop creates its
  folders and files, so a caller that embeds pitstop without the entry points gets the same.
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
    """``path`` (and missing parents) as directories only the owner can enter."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for p in missing:
        with contextlib.suppress(OSError):
            p.chmod(0o700)
    return path


def private_file(path: Path) -> Path:
    """Make an existing file readable by its owner only."""
    with contextlib.suppress(OSError):
        path.chmod(0o600)
    return path


def write_private(path: Path, data: bytes | str) -> Path:
    """Write ``path`` created 0600 (never briefly readable by others)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(raw)
    return private_file(path)
