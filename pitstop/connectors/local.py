"""Local transport: a directory on this machine stands for a host's filesystem.

Used by the demo and tests. Host paths map under ``root`` (``/var/log`` → ``<root>/var/log``);
commands run on this machine as argument lists (no shell) with the sandbox as working directory.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from ..errors import CommandFailed, ConnectorError
from ..model import CommandResult
from .base import Connection


class LocalConnection(Connection):
    def __init__(self, name: str, root: Path):
        self.name = name
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, host_path: str) -> str:
        rel = os.path.normpath("/" + host_path.lstrip("/")).lstrip("/")
        full = (self.root / rel).resolve()
        if full != self.root.resolve() and self.root.resolve() not in full.parents:
            raise ConnectorError(f"{self.name}: path {host_path!r} escapes the sandbox")
        return str(full)

    def run(self, argv: list[str], *, input: bytes | None = None, timeout: float | None = None,
            check: bool = True, sudo: bool = False) -> CommandResult:
        start = time.monotonic()
        try:
            proc = subprocess.run(argv, input=input, capture_output=True, timeout=timeout, cwd=self.root,
                                  check=False)
        except FileNotFoundError:
            raise CommandFailed(argv, 127, f"{argv[0]}: command not found", self.name) from None
        except subprocess.TimeoutExpired:
            raise CommandFailed(argv, 124, f"timed out after {timeout}s", self.name) from None
        result = CommandResult(argv=argv, exit_code=proc.returncode, stdout=proc.stdout.decode(errors="replace"),
                               stderr=proc.stderr.decode(errors="replace"), duration_s=time.monotonic() - start)
        if check and proc.returncode != 0:
            raise CommandFailed(argv, proc.returncode, result.stderr, self.name)
        return result

    def put(self, host_path: str, data: bytes, mode: int = 0o644, *, sudo: bool = False) -> None:
        target = Path(self.path(host_path))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.pitstop-tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, mode)
        os.replace(tmp, target)

    def get(self, host_path: str, *, sudo: bool = False) -> bytes:
        return Path(self.path(host_path)).read_bytes()

    def exists(self, host_path: str, *, sudo: bool = False) -> bool:
        return Path(self.path(host_path)).exists()

    def remove(self, host_path: str, *, sudo: bool = False) -> bool:
        try:
            Path(self.path(host_path)).unlink()
            return True
        except FileNotFoundError:
            return False
