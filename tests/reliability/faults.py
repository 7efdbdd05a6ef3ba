"""A small TCP fault proxy (generalising tests/backup's ResetProxy and tests/fleet's ResetOnceProxy).

Each accepted connection takes the next fault from ``plan`` (then forwards once the plan is empty):
``reset`` answers with a TCP RST after the client spoke, ``http503`` answers ``503 Slow Down`` and
closes, ``stall`` accepts and never answers (the client's timeout fires), ``drop`` accepts and
closes at once without a word (what sshd does to a connection over its ``MaxStartups``). ``served`` counts the
faults really delivered.

``outage_on(trigger, seconds)`` models the server going away mid-transfer (a restart): the first
forwarded request whose bytes contain ``trigger`` starts an outage — every live connection is cut
(RST) and every new one is reset on accept for ``seconds`` — then the proxy forwards again. Why not
restart moto itself: moto's server keeps buckets in memory, so a restarted moto has lost the bucket
and every object; a real S3 endpoint that restarts keeps them. The proxy gives the client exactly
what it would see (refused/reset connections for a while) without that artefact."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import deque


def _http_503() -> bytes:
    body = b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"
    head = (f"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    return head + body


class FaultProxy:
    def __init__(self, target: tuple[str, int], plan: list[str] | None = None):
        self.target = target
        self.plan: deque[str] = deque(plan or [])
        self.served: dict[str, int] = {}
        self.accepted = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._lock = threading.Lock()
        self._held: list[socket.socket] = []
        self._live: set[socket.socket] = set()
        self._triggers: deque[tuple[bytes, float]] = deque()
        self.down_until = 0.0
        self.outages = 0  # outages really started
        self.refused = 0  # connections reset because the "server" was down
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def faults(self) -> int:
        return sum(self.served.values())

    def add(self, *faults: str) -> None:
        with self._lock:
            self.plan.extend(faults)

    def outage_on(self, trigger: bytes, seconds: float) -> None:
        with self._lock:
            self._triggers.append((trigger, seconds))

    def _maybe_outage(self, data: bytes) -> bool:
        with self._lock:
            if not self._triggers or self._triggers[0][0] not in data:
                return False
            _, seconds = self._triggers.popleft()
            self.down_until = time.monotonic() + seconds
            self.outages += 1
            live, self._live = list(self._live), set()
        for c in live:
            _reset(c)
        return True

    def _next(self) -> str | None:
        with self._lock:
            return self.plan.popleft() if self.plan else None

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if time.monotonic() < self.down_until:
                self.refused += 1
                _reset(conn)
                continue
            fault = self._next()
            if fault is None:
                threading.Thread(target=self._forward, args=(conn,), daemon=True).start()
                continue
            threading.Thread(target=self._fault, args=(conn, fault), daemon=True).start()

    def _fault(self, conn: socket.socket, fault: str) -> None:
        with self._lock:
            self.served[fault] = self.served.get(fault, 0) + 1
        if fault == "stall":
            self._held.append(conn)
            return
        if fault == "drop":
            conn.close()
            return
        try:
            conn.settimeout(5)
            conn.recv(65536)  # let the client send its request (or SSH banner) first
            if fault == "http503":
                conn.sendall(_http_503())
                conn.close()
                return
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        except OSError:
            pass

    def _forward(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            conn.close()
            return
        with self._lock:
            self._live.update((conn, upstream))
        for a, b, watch in ((conn, upstream, True), (upstream, conn, False)):
            threading.Thread(target=self._pipe, args=(a, b, watch), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, watch: bool = False) -> None:
        try:
            while data := src.recv(65536):
                if watch and self._triggers and self._maybe_outage(data):
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()
        for c in self._held:
            c.close()


def _reset(conn: socket.socket) -> None:
    """Close with a TCP RST (what a client sees when the server process dies)."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    except OSError:
        pass
