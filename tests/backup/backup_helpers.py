"""Helpers shared by the backup tests (imported as ``backup_helpers``)."""

from __future__ import annotations

import os
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import yaml

KEY_ENV, SECRET_ENV = "PITSTOP_TEST_S3_KEY", "PITSTOP_TEST_S3_SECRET"
os.environ.setdefault(KEY_ENV, "testing-access-key")
os.environ.setdefault(SECRET_ENV, "testing-secret-key-do-not-log")


class ResetProxy:
    """Forwards TCP to ``target``; the first ``resets`` connections are answered with a RST."""

    def __init__(self, target: tuple[str, int], resets: int):
        self.target, self.resets, self.accepted = target, resets, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.resets > 0:
                self.resets -= 1
                conn.recv(1024)  # let the client send its request, then reset the connection
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                continue
            upstream = socket.create_connection(self.target)
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
        self._stop = True
        self.sock.close()


def s3_storage(endpoint: str, bucket: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "s3", "bucket": bucket, "endpoint_url": endpoint, "region": "us-east-1",
            "access_key_env": KEY_ENV, "secret_key_env": SECRET_ENV, **extra}


def kinds(ctx: Any) -> list[str]:
    return [e["kind"] for e in ctx.audit.events]


def write_runbook(path: Path, stages: list[dict[str, Any]], kind: str = "custom") -> Path:
    path.write_text(yaml.safe_dump({"name": path.stem, "kind": kind, "stages": stages}, sort_keys=False))
    return path
