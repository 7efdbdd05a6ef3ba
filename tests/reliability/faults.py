"""A small TCP fault proxy (generalising tests/backup's ResetProxy and tests/fleet's ResetOnceProxy).

Each accepted connection takes the next fault from ``plan`` (then forwards once the plan is empty):
``reset`` answers with a TCP RST after the client spoke, ``http503`` answers ``503 Slow Down`` and
closes, ``stall`` accepts and never answers (the client's timeout fires). ``served`` counts the
faults really delivered."""

from __future__ import annotations

import socket
import struct
import threading
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
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def faults(self) -> int:
        return sum(self.served.values())

    def add(self, *faults: str) -> None:
        with self._lock:
            self.plan.extend(faults)

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
        for a, b in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
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
