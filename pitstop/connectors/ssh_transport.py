"""paramiko's transport made cheaper per connection and per packet for fleets (same protocol, same
checks): buffered socket reads, the key-exchange timeout without a timer thread, AES-GCM preferred,
server debug messages formatted only when logged, indexed host-key stores in the client. Used by
:mod:`pitstop.connectors.ssh`."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import paramiko
from paramiko.packet import Packetizer

from ..fleet.hostkeys import KnownHosts

_BASE_CIPHERS: tuple[str, ...] = getattr(paramiko.Transport, "_preferred_ciphers")  # noqa: B009 - not in stubs
_BASE_MACS: tuple[str, ...] = getattr(paramiko.Transport, "_preferred_macs")  # noqa: B009
_log = logging.getLogger("paramiko.transport")


class BufferedSocket:
    """The TCP socket under paramiko, with reads buffered.

    paramiko reads every packet in two ``recv`` calls (header, then the rest), and a socket with a
    timeout costs a ``poll`` plus a ``recv`` system call each; one 64 KiB read serves several packets
    that arrived together. Only paramiko's transport thread reads; everything else is forwarded.
    """

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, n: int) -> bytes:
        if self._pos >= len(self._buf):
            data = self._sock.recv(max(n, 65536))
            if len(data) <= n:
                return data
            self._buf, self._pos = data, 0
        out = self._buf[self._pos : self._pos + n]
        self._pos += len(out)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class DeadlinePacketizer(Packetizer):
    """paramiko's packetizer with the key-exchange timeout kept as a deadline: paramiko starts a
    ``threading.Timer`` (one more thread per connection) and cancels it on every packet read."""

    _deadline: float | None = None
    _handshake_done = False

    def start_handshake(self, timeout: float) -> None:
        if self._deadline is None:
            self._deadline = time.monotonic() + float(timeout)

    def handshake_timed_out(self) -> bool:
        return self._deadline is not None and not self._handshake_done and time.monotonic() > self._deadline

    def complete_handshake(self) -> None:
        if self._deadline is not None:
            self._handshake_done = True


class FleetTransport(paramiko.Transport):
    """paramiko's transport, cheaper per connection and per packet, same protocol and checks:

    * AES-GCM preferred (then encrypt-then-MAC): no HMAC computed and compared in Python per packet;
    * the key-exchange timeout as a deadline (:class:`DeadlinePacketizer`), not a timer thread;
    * the server's debug messages formatted only when paramiko's DEBUG logging is on.
    """

    _preferred_ciphers = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com") + tuple(
        c for c in _BASE_CIPHERS if "-gcm@" not in c
    )
    _preferred_macs = tuple(m for m in _BASE_MACS if "-etm@" in m) + tuple(m for m in _BASE_MACS if "-etm@" not in m)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.packetizer.__class__ = DeadlinePacketizer

    def _parse_debug(self, m: paramiko.Message) -> None:
        # OpenSSH sends a debug message per login ("key options: ..."); paramiko formats it byte by
        # byte in Python even when nobody logs it.
        m.get_boolean()
        msg = m.get_string()
        m.get_string()
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("Debug msg: %r", paramiko.util.safe_string(msg))


class FleetClient(paramiko.SSHClient):
    """paramiko's client with indexed host-key stores (:class:`~pitstop.fleet.hostkeys.KnownHosts`): the
    client looks the server up in both stores on every connect, and paramiko's ``HostKeys.lookup``
    builds a new ``MutableMapping`` subclass per call."""

    def __init__(self) -> None:
        super().__init__()
        self._system_host_keys = KnownHosts()
        self._host_keys = KnownHosts()
