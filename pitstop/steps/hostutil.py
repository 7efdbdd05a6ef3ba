"""Small helpers shared by the host steps (tuning, reclaim, sysctl, services, packages, commands).

*Sandbox* hosts (``transport: local``) stand for a host with a directory; commands still run on
this machine. Steps therefore never run commands that act on the whole machine (``sysctl -w``,
``journalctl --vacuum``, package managers, ``systemctl``) against a sandbox; they report what they
would do instead. Paths in parameters must be absolute so no value can be read as an option.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

from ..connectors.base import Connection
from ..errors import CommandFailed


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


def delete_files(
    conn: Connection, host_path: str, *tests: str, sudo: bool = False
) -> tuple[list[tuple[int, str]], list[str]]:
    """Delete the regular files under ``host_path`` matching find ``tests``.

    Returns ``(size, real path)`` of each file deleted and find's complaints (a file or directory
    it could not read or remove; the rest is still deleted). find lists and deletes in one pass:
    ``-delete`` unlinks relative to the directory being walked and never follows a symlink, so a
    directory swapped for a symlink between a listing and an ``rm`` cannot point a deletion run as
    root at another part of the filesystem."""
    if not conn.exists(host_path):
        return [], []
    argv = ["find", conn.path(host_path), "-xdev", "-type", "f", *tests, "-printf", "%s %p\\0", "-delete"]
    out = conn.run(argv, check=False, sudo=sudo)
    if out.exit_code not in (0, 1):
        raise CommandFailed(argv, out.exit_code, out.stderr, getattr(conn, "name", ""))
    return _parse_found(out.stdout), [line for line in out.stderr.splitlines() if line.strip()]


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
