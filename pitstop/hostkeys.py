"""SSH host keys: known_hosts loading (cached), fingerprints, fetching and pinning.

Host keys are always verified: connections load the configured known_hosts files and refuse an
unknown or changed key (:class:`RejectUnknown`, a paramiko ``RejectPolicy``). New keys enter a
known_hosts file only through an explicit ``pitstop hosts trust``, which shows the SHA256
fingerprint of every key it pins.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import paramiko

from .errors import ConnectorError, HostKeyError

_cache: dict[tuple[tuple[str, str], ...], paramiko.HostKeys] = {}
_cache_lock = threading.Lock()


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint (``ssh-keygen -l``): ``SHA256:<base64 without padding>``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def entry_name(hostname: str, port: int) -> str:
    """How known_hosts names a host: ``host`` on port 22, ``[host]:port`` otherwise."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


def known_hosts(paths: list[str]) -> paramiko.HostKeys:
    """The merged, parsed known_hosts files; parsed once per content (cached by path and digest).

    Parsing builds a key object per line, so a fleet of N hosts must not parse N lines N times.
    """
    files = [Path(p).expanduser() for p in paths]
    stamp = tuple(
        (str(f), hashlib.sha1(f.read_bytes(), usedforsecurity=False).hexdigest() if f.is_file() else "")
        for f in files
    )
    with _cache_lock:
        cached = _cache.get(stamp)
        if cached is not None:
            return cached
        keys = paramiko.HostKeys()
        for f in files:
            if f.exists():
                try:
                    keys.load(str(f))
                except (OSError, paramiko.SSHException) as exc:
                    raise ConnectorError(f"cannot read known_hosts file {f}: {exc}") from None
        _cache.clear()
        _cache[stamp] = keys
        return keys


class RejectUnknown(paramiko.RejectPolicy):
    """Refuse a host whose key is not pinned, naming the host and the fingerprint it presented."""

    def __init__(self, label: str, files: list[str]):
        self.label = label
        self.files = files

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> NoReturn:
        raise HostKeyError(
            f"{self.label}: host key for {hostname} is not known ({key.get_name()} {fingerprint(key)}); "
            f"refusing to connect. Verify the fingerprint, then pin it with `pitstop hosts trust` "
            f"(known_hosts: {', '.join(self.files)})"
        )


def changed_key_error(label: str, hostname: str, got: paramiko.PKey, expected: paramiko.PKey) -> HostKeyError:
    return HostKeyError(
        f"{label}: HOST KEY CHANGED for {hostname}: it presented {got.get_name()} {fingerprint(got)}, "
        f"known_hosts pins {expected.get_name()} {fingerprint(expected)}. Possible man-in-the-middle; "
        "refusing to connect"
    )


@dataclass
class FetchedKey:
    name: str  # the known_hosts entry name ([host]:port)
    key: paramiko.PKey

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)

    @property
    def line(self) -> str:
        return f"{self.name} {self.key.get_name()} {self.key.get_base64()}"


def fetch_host_key(
    hostname: str,
    port: int,
    timeout: float,
    sock: socket.socket | paramiko.Channel | None = None,
    key_types: list[str] | None = None,
) -> FetchedKey:
    """Ask a server for its host key (key exchange only; no authentication, nothing runs)."""
    try:
        sock = sock or socket.create_connection((hostname, port), timeout=timeout)
        transport = paramiko.Transport(sock)
        if key_types:
            transport.get_security_options().key_types = key_types
        try:
            transport.start_client(timeout=timeout)
            key = transport.get_remote_server_key()
        finally:
            transport.close()
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise ConnectorError(
            f"cannot fetch the host key of {hostname}:{port}: {exc or type(exc).__name__}"
        ) from None
    return FetchedKey(entry_name(hostname, port), key)


def pinned(keys: paramiko.HostKeys, name: str) -> dict[str, paramiko.PKey]:
    found = keys.lookup(name)
    return dict(found) if found else {}


def pin(path: str, fetched: list[FetchedKey]) -> Path:
    """Append ``fetched`` keys to the known_hosts file ``path`` (created 0600 in a 0700 directory)."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    existing = target.read_text() if target.exists() else ""
    lines = "".join(f.line + "\n" for f in fetched)
    if existing and not existing.endswith("\n"):
        lines = "\n" + lines
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as fh:
        fh.write(lines)
    return target
