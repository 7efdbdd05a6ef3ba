"""Small helpers shared by the host steps (tuning, reclaim, sysctl, services, packages, commands).

*Sandbox* hosts (``transport: local``) stand for a host with a directory; commands still run on
this machine. Steps therefore never run commands that act on the whole machine (``sysctl -w``,
``journalctl --vacuum``, package managers, ``systemctl``) against a sandbox; they report what they
would do instead. Paths in parameters must be absolute so no value can be read as an option.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import AfterValidator

from ..connectors.base import Connection
from . import safefile


def _abs_path(v: str) -> str:
    if not v.startswith("/") or "\n" in v or "\0" in v:
        raise ValueError("must be an absolute path (starting with /) on one line")
    return v


AbsPath = Annotated[str, AfterValidator(_abs_path)]


def is_sandbox(conn: Connection) -> bool:
    """True for a local sandbox (a directory standing for a host's filesystem)."""
    return conn.path("/") != "/"


def has_command(conn: Connection, name: str) -> bool:
    """Whether ``name`` is an executable on the host (no shell involved)."""
    return conn.run(["which", name], check=False).exit_code == 0


def chunks(items: list[str], size: int = 200) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def find_files(conn: Connection, host_path: str, *tests: str) -> list[tuple[int, str]]:
    """``(size, real path)`` of regular files under ``host_path`` matching find ``tests``.

    ``tests`` are separate find arguments (never a shell string); missing directories give []."""
    if not conn.exists(host_path):
        return []
    argv = ["find", conn.path(host_path), "-xdev", "-type", "f", *tests, "-printf", "%s %p\\0"]
    out = conn.run(argv, check=False)
    if out.exit_code not in (0, 1):
        return []
    return _parse_found(out.stdout)


@dataclass
class Deleted:
    files: list[tuple[int, str]] = field(default_factory=list)  # (size, real path) of each file deleted
    problems: list[str] = field(default_factory=list)  # find's complaints (the rest is still deleted)
    refused: list[str] = field(default_factory=list)  # a directory not safe to delete in as root, and why


def delete_files(conn: Connection, host_path: str, *tests: str, sudo: bool = False,
                 trusted_groups: Sequence[str] = ()) -> Deleted:
    """Delete the regular files under ``host_path`` matching find ``tests``.

    find lists and deletes in one pass: ``-delete`` unlinks relative to the directory being walked
    and never follows a symlink below its starting point. The starting point is reached with the
    privileges of whoever controls the path to it (:mod:`pitstop.fleet.safefile`): a parent
    directory swapped for a symlink cannot point a deletion run as root elsewhere."""
    if not conn.exists(host_path):
        return Deleted()
    out, problems = safefile.delete(conn, conn.path(host_path), tests, sudo=sudo, trusted_groups=trusted_groups)
    return Deleted(sorted(out.deleted, key=lambda t: t[1]), problems + out.failed, out.refused)


def _parse_found(stdout: str) -> list[tuple[int, str]]:
    found = []
    for item in stdout.split("\0"):
        if item:
            size, _, path = item.partition(" ")
            found.append((int(size), path))
    return sorted(found, key=lambda t: t[1])


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}TiB"
