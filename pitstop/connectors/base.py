"""The connector interface every host transport implements (local sandbox, SSH).

Steps never care where they run: they build commands as argument lists (never shell strings)
and move files with ``put``/``get``. Paths are *host* paths (``/var/log/app``); a transport maps
them to where they really live with :meth:`Connection.path`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from ..model import CommandResult

TAIL = 2000  # characters of a command's stdout/stderr kept in a connection's history


@dataclass(frozen=True)
class Cmd:
    """One command of a batch (see :meth:`Connection.run_batch`): an argument list, as for ``run``."""

    argv: list[str]
    check: bool = True
    sudo: bool = False
    timeout: float | None = None


@dataclass(frozen=True)
class Put:
    """One file write of a batch: ``data`` to ``path`` atomically, as ``put`` does."""

    path: str
    data: bytes
    mode: int = 0o644
    sudo: bool = False


BatchOp = Cmd | Put


class Connection(abc.ABC):
    name: str

    @abc.abstractmethod
    def path(self, host_path: str) -> str:
        """Where ``host_path`` really lives for this transport (identity on real hosts)."""

    @abc.abstractmethod
    def run(self, argv: list[str], *, input: bytes | None = None, timeout: float | None = None,
            check: bool = True, sudo: bool = False) -> CommandResult:
        """Run ``argv`` (a list, quoted by the transport). Raises CommandFailed when ``check``."""

    # File operations take ``sudo`` like ``run``: a step that needs root for its commands needs it
    # for its files too (a drop-in under /etc, a flag file the web server's user owns).
    @abc.abstractmethod
    def put(self, host_path: str, data: bytes, mode: int = 0o644, *, sudo: bool = False) -> None:
        """Write ``data`` atomically (temporary name, then rename)."""

    @abc.abstractmethod
    def get(self, host_path: str, *, sudo: bool = False) -> bytes: ...

    @abc.abstractmethod
    def exists(self, host_path: str, *, sudo: bool = False) -> bool: ...

    @abc.abstractmethod
    def remove(self, host_path: str, *, sudo: bool = False) -> bool:
        """Remove a file; True if it existed."""

    def run_batch(self, ops: Sequence[BatchOp]) -> list[CommandResult | None]:
        """Run ``ops`` in order, each exactly as ``run``/``put`` would on its own, and stop at the
        first failure: a checked command that fails raises :class:`CommandFailed`, a failed write
        raises :class:`ConnectorError`, and the later ops do not run. Returns one result per op
        (``None`` for a :class:`Put`). Transports that can do better override it: SSH runs the whole
        batch in one session (one remote shell) instead of one session per op."""
        out: list[CommandResult | None] = []
        for op in ops:
            if isinstance(op, Put):
                self.put(op.path, op.data, op.mode, sudo=op.sudo)
                out.append(None)
            else:
                out.append(self.run(op.argv, check=op.check, sudo=op.sudo, timeout=op.timeout))
        return out

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the transport (SSH session); local does nothing."""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
