"""One error hierarchy for pitstop.

Every error pitstop raises on purpose derives from :class:`PitstopError`. Subclasses also inherit
the closest built-in where it fits, so callers can catch either. Messages never carry secrets.
"""

from __future__ import annotations

from dataclasses import dataclass


class PitstopError(Exception):
    """Base class of every deliberate pitstop error."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One validation problem, pointing at a file and line."""

    file: str
    line: int | None
    where: str
    message: str

    def __str__(self) -> str:
        if not self.file:
            return self.message
        loc = f"{self.file}:{self.line}" if self.line else self.file
        where = f" at {self.where}" if self.where else ""
        return f"{loc}{where}: {self.message}"


class InputError(PitstopError, ValueError):
    """Bad input (config, runbook, CLI arguments). Exit code 2, nothing executed."""

    exit_code = 2

    def __init__(self, problems: list[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem(file="", line=None, where="", message=problems)]
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ConfigError(InputError):
    """The environment config is invalid."""


class RunbookError(InputError):
    """The runbook is invalid or references unknown steps, groups or checks."""


class PluginError(InputError):
    """An installed plug-in (entry-point group ``pitstop.plugins``) cannot be loaded or declares nonsense:
    nothing can be validated or run with it. Exit code 2, nothing executed."""


class ConnectorError(PitstopError, ConnectionError):
    """A transport (local, SSH, PostgreSQL, storage) failed."""


class TransientError(ConnectorError):
    """A failure worth retrying (connection reset, timeout, 5xx)."""


class HostKeyError(ConnectorError):
    """An SSH host key is unknown or changed. Never retried."""


class CommandFailed(PitstopError, RuntimeError):
    """A command exited with an unexpected status."""

    def __init__(self, argv: list[str], exit_code: int, stderr: str = "", host: str = ""):
        self.argv = argv
        self.exit_code_seen = exit_code
        self.stderr = stderr
        self.host = host
        where = f" on {host}" if host else ""
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        super().__init__(f"command {argv[0]!r}{where} exited {exit_code}" + (f": {tail}" if tail else ""))


class StepFailed(PitstopError, RuntimeError):
    """A runbook step failed."""


class BackupError(PitstopError, RuntimeError):
    """A backup could not be taken or did not verify."""


class GateRefused(PitstopError, PermissionError):
    """A destructive step was refused because a safety gate was not met."""


class CheckFailed(PitstopError, AssertionError):
    """A check did not pass."""


class RunLocked(PitstopError, RuntimeError):
    """Another run holds the environment lock."""

    exit_code = 3


class AbandonedWindow(RunLocked):
    """A run of the environment died with maintenance mode on (its audit log says so): a new run is refused
    until that run is resumed, like a run holding the lock (exit 3)."""
