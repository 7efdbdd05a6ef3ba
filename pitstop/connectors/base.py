"""The connector interface every host transport implements (local sandbox, SSH).

Steps never care where they run: they build commands as argument lists (never shell strings)
and move files with ``put``/``get``. Paths are *host* paths (``/var/log/app``); a transport maps
them to where they really live with :meth:`Connection.path`.
"""

from __future__ import annotations

import abc

from ..model import CommandResult


class Connection(abc.ABC):
    name: str

    @abc.abstractmethod
    def path(self, host_path: str) -> str:
        """Where ``host_path`` really lives for this transport (identity on real hosts)."""

    @abc.abstractmethod
    def run(self, argv: list[str], *, input: bytes | None = None, timeout: float | None = None,
            check: bool = True, sudo: bool = False) -> CommandResult:
        """Run ``argv`` (a list, quoted by the transport). Raises CommandFailed when ``check``."""

    @abc.abstractmethod
    def put(self, host_path: str, data: bytes, mode: int = 0o644) -> None:
        """Write ``data`` atomically (temporary name, then rename)."""

    @abc.abstractmethod
    def get(self, host_path: str) -> bytes: ...

    @abc.abstractmethod
    def exists(self, host_path: str) -> bool: ...

    @abc.abstractmethod
    def remove(self, host_path: str) -> bool:
        """Remove a file; True if it existed."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the transport (SSH session); local does nothing."""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
