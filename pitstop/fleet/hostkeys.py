"""SSH host keys: known_hosts loading (cached), fingerprints, fetching and pinning.

Host keys are always verified: connections load the configured known_hosts files and refuse an
unknown or changed key (:class:`RejectUnknown`, a paramiko ``RejectPolicy``). New keys enter a
known_hosts file only through an explicit ``pitstop hosts trust``, which shows the SHA256
fingerprint of every key it pins.

known_hosts files are parsed once per process and content (:func:`known_hosts`) into an indexed
:class:`KnownHosts`: loading is linear (paramiko's ``HostKeys.load`` is quadratic in the number of
lines) and looking a host up is a dict access instead of a scan of every entry. ``@revoked`` keys
are never returned; other ``@`` marker lines (``@cert-authority``) are ignored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

from ..errors import ConnectorError, HostKeyError

_cache: dict[tuple[tuple[str, str], ...], KnownHosts] = {}
_cache_lock = threading.Lock()


class HostKeysFound(dict):  # type: ignore[type-arg]
    """``{keytype: key}`` for one host; ``keys()`` is a list, as paramiko's client indexes it."""

    def keys(self) -> list[str]:  # type: ignore[override]
        return list(super().keys())


class KnownHosts(paramiko.HostKeys):
    """``paramiko.HostKeys`` with an index: linear load, dict lookup by host name.

    Lookups return a plain ``{keytype: key}`` dict (first entry per key type wins, as in paramiko;
    paramiko's own lookup defines a ``MutableMapping`` class on every call, ~0.3 ms); hashed names
    (``|1|salt|hmac``) are still matched by HMAC. The cached instance is shared read-only.
    """

    _entries: list[HostKeyEntry]  # paramiko's own list (not in its type stubs)

    def __init__(self, filename: str | None = None):
        self._by_name: dict[str, list[int]] = {}
        self._hashed: list[int] = []
        self._revoked: set[tuple[str, str]] = set()
        super().__init__(filename)

    def load(self, filename: int | str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> None:
        with open(filename) as f:
            for lineno, raw in enumerate(f, 1):
                line = raw.strip()
                if not line or line[0] == "#":
                    continue
                if line[0] == "@":
                    fields = line.split()
                    if fields[0] == "@revoked" and len(fields) >= 4:
                        self._revoked.add((fields[2], fields[3]))
                    continue
                try:
                    entry = HostKeyEntry.from_line(line, lineno)
                except (paramiko.SSHException, InvalidHostKey):
                    continue
                if entry is not None:
                    self._entries.append(entry)
                    self._index(len(self._entries) - 1, entry)

    def _index(self, pos: int, entry: HostKeyEntry) -> None:
        for h in entry.hostnames:
            if h.startswith("|1|"):
                if not self._hashed or self._hashed[-1] != pos:
                    self._hashed.append(pos)
            else:
                self._by_name.setdefault(h, []).append(pos)

    def _hashed_match(self, hostname: str, entry: HostKeyEntry) -> bool:
        return any(
            h.startswith("|1|") and hmac.compare_digest(self.hash_host(hostname, h), h) for h in entry.hostnames
        )

    def add(self, hostname: str, keytype: str, key: paramiko.PKey) -> None:
        super().add(hostname, keytype, key)
        self._by_name.clear()
        self._hashed.clear()
        for pos, entry in enumerate(self._entries):
            self._index(pos, entry)

    def lookup(self, hostname: str) -> HostKeysFound | None:  # type: ignore[override]
        positions = set(self._by_name.get(hostname, ()))
        if not hostname.startswith("|1|"):
            positions.update(p for p in self._hashed if self._hashed_match(hostname, self._entries[p]))
        found = HostKeysFound()
        for pos in sorted(positions):
            key = self._entries[pos].key
            if key is None or (self._revoked and (key.get_name(), key.get_base64()) in self._revoked):
                continue
            found.setdefault(key.get_name(), key)
        return found or None


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint (``ssh-keygen -l``): ``SHA256:<base64 without padding>``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def entry_name(hostname: str, port: int) -> str:
    """How known_hosts names a host: ``host`` on port 22, ``[host]:port`` otherwise."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


def known_hosts(paths: list[str]) -> KnownHosts:
    """The merged, parsed known_hosts files; parsed once per content (cached by path and digest).

    Parsing builds a key object per line, so a fleet of N hosts must not parse N lines N times;
    the file is still read (and its digest compared) on every call, so a key pinned or removed
    meanwhile is seen by the next connection.
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
        keys = KnownHosts()
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
            f"cannot fetch the SSH host key of {hostname}:{port} ({exc or type(exc).__name__}); check that the host "
            f"is up, its address and port (config or inventory) and that sshd listens there"
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
