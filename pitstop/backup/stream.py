"""Getting ``pg_dump``'s bytes into storage: a socket pair for the custom format (no temporary file),
local staging plus a tar stream for the directory format (``-j``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from typing import IO, Any, BinaryIO

from ..context import RunContext
from ..errors import BackupError
from ..fsmodes import PRIVATE_UMASK, private_dir


def _drain(stream: IO[bytes], sink: list[bytes]) -> None:
    sink.append(stream.read())


class _DumpChannel:
    """pg_dump's stdout as a local stream socket rather than a pipe.

    A pipe holds at most 1 MiB here (``pipe-max-size``) and wakes the reader for every few KiB that
    arrive; a socket pair takes a 4 MiB buffer (where the kernel allows it) and ``MSG_WAITALL`` lets one
    ``recv`` fill a whole upload part: fewer wake-ups and system calls for the uploader, and pg_dump keeps
    writing while a part is hashed. Same bytes, same end-of-stream, no temporary file.
    """

    BUFFER = 4 << 20

    def __init__(self, eof: threading.Event | None = None) -> None:
        self.eof = eof or threading.Event()  # set once pg_dump's last byte has been read
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # Linux's SO_SNDBUFFORCE/SO_RCVBUFFORCE (32/33) pass the net.core.*mem_max cap when allowed.
        linux = sys.platform.startswith("linux")
        for sock in (self.ours, self.theirs):
            for forced, plain in ((32, socket.SO_SNDBUF), (33, socket.SO_RCVBUF)):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, forced if linux else plain, self.BUFFER)
                except OSError:
                    sock.setsockopt(socket.SOL_SOCKET, plain, self.BUFFER)

    def child_fd(self) -> int:
        return self.theirs.fileno()

    def started(self) -> None:
        self.theirs.close()  # the child holds its copy: end-of-stream comes when pg_dump exits

    def readinto(self, buf: Any) -> int:
        n = self.ours.recv_into(buf, len(buf), socket.MSG_WAITALL)
        if not n and len(buf):
            self.eof.set()
        return n

    def read(self, n: int = -1) -> bytes:
        data = self.ours.recv(n if n > 0 else self.BUFFER, socket.MSG_WAITALL)
        if not data:
            self.eof.set()
        return data

    def close(self) -> None:
        self.eof.set()
        self.ours.close()
        self.theirs.close()


def stream_dump(ctx: RunContext, argv: list[str], key: str, size_hint: int,
                 eof: threading.Event | None = None) -> Any:
    """Run ``pg_dump`` writing to stdout and stream it into storage; kill it if storage fails.
    ``eof`` is set once pg_dump's output has been read to the end (or the dump failed)."""
    db = ctx.db
    channel = _DumpChannel(eof)
    try:
        proc = subprocess.Popen(argv, stdout=channel.child_fd(), stderr=subprocess.PIPE, env=db.tool_env(),
                                umask=PRIVATE_UMASK)
        channel.started()
        assert proc.stderr is not None
        err: list[bytes] = []
        reader = threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True)
        reader.start()
        try:
            stored = ctx.storage.put_stream(key, channel, size_hint)  # type: ignore[arg-type]
        except BaseException:
            proc.kill()  # otherwise pg_dump blocks forever on its full socket
            raise
        finally:
            code = proc.wait()
            reader.join()
    finally:
        channel.close()
    if code != 0:
        ctx.storage.delete(key)
        raise BackupError(f"pg_dump exited {code}: {ctx.redact(b''.join(err).decode(errors='replace').strip())}")
    return stored


def _tar_dir(src: Path, out: BinaryIO) -> None:
    try:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            tar.add(src, arcname="dump")
    finally:
        out.close()


def stream_directory(ctx: RunContext, argv: list[str], key: str, staging: Path) -> Any:
    """Directory format: ``pg_dump -Fd -j`` into local staging, then a tar stream into storage."""
    dump_dir = staging / "dump"
    shutil.rmtree(staging, ignore_errors=True)
    private_dir(staging)  # 0700 (and its missing parents) whatever the umask: it holds the dump's files
    try:
        # pg_dump creates the files under its umask: 077, whatever this process runs under
        done = subprocess.run([*argv, "-f", str(dump_dir)], capture_output=True, env=ctx.db.tool_env(),
                              umask=PRIVATE_UMASK)
        if done.returncode != 0:
            raise BackupError(f"pg_dump exited {done.returncode}: "
                              f"{ctx.redact(done.stderr.decode(errors='replace').strip())}")
        size = sum(p.stat().st_size for p in dump_dir.rglob("*") if p.is_file())
        r, w = os.pipe()
        with open(r, "rb") as reader, open(w, "wb") as writer:
            t = threading.Thread(target=_tar_dir, args=(dump_dir, writer), daemon=True)
            t.start()
            try:
                stored = ctx.storage.put_stream(key, reader, size + 1024 * 1024)
            finally:
                reader.close()
                t.join()
        return stored
    finally:
        shutil.rmtree(staging, ignore_errors=True)
