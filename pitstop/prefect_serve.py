"""The local Prefect API server process of a state directory (see :mod:`pitstop.prefect_server`).

``python -m pitstop.prefect_serve --dir <state_dir>/prefect --idle SECONDS`` runs Prefect's API app
(``prefect.server.api.server:create_app``, as Prefect's own ephemeral server does) under uvicorn, on the
listening socket its starter bound and passed as ``$PITSTOP_PREFECT_LISTEN_FD``, with a watchdog thread
that ends the process:

* once no pitstop command has held ``clients.lock`` for ``--idle`` seconds (checked under ``server.lock``,
  so a command joining at that moment either sees the server gone or keeps it alive);
* at once if ``server.json`` does not name this process (its starter died before recording it, or the
  directory was removed): it is then nobody's server.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from .prefect_server import LISTEN_FD_ENV, db_revision, prefect_version, read_record

APP = "prefect.server.api.server:create_app"  # what Prefect's own ephemeral server runs
STOP_GRACE_S = 10.0  # uvicorn's graceful shutdown, then the process ends regardless


def _free(fd: int) -> bool:
    """Can this process take ``fd``'s lock exclusively (then it releases it at once)?"""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


class Watchdog:
    def __init__(self, directory: Path, idle_s: float, stop: Any) -> None:
        self.directory, self.idle_s, self.stop = directory, idle_s, stop
        self.poll_s = min(1.0, max(0.2, idle_s / 10))
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        self.clients = os.open(directory / "clients.lock", flags, 0o600)
        self.server_lock = os.open(directory / "server.lock", flags, 0o600)

    def _mine(self) -> bool:
        rec = read_record(self.directory)
        return rec is not None and rec.pid == os.getpid()

    def _decide(self, idle: bool) -> bool:
        """Under ``server.lock``: stop if idle (still) or if the record is not this process. The lock stays
        held until the process exits, so no command joins a server that is going away."""
        try:
            fcntl.flock(self.server_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a command is joining (or starting this server): ask again later
        mine = self._mine()
        if mine and not (idle and _free(self.clients)):
            fcntl.flock(self.server_lock, fcntl.LOCK_UN)
            return False
        if mine:
            with contextlib.suppress(OSError):
                (self.directory / "server.json").unlink()
        return True

    def run(self) -> None:
        last_busy = time.monotonic()
        while True:
            time.sleep(self.poll_s)
            if not self.directory.is_dir():
                break
            busy = not _free(self.clients)
            if busy:
                last_busy = time.monotonic()
            if not self._mine():  # nobody's server (checked again under the lock: its starter may be recording it)
                if self._decide(idle=False):
                    break
                continue
            if not busy and time.monotonic() - last_busy >= self.idle_s and self._decide(idle=True):
                break
        self.stop()


def note_migrated(directory: Path, server: Any) -> None:
    """Once the server is up after checking the migrations of its own SQLite database, say so in
    ``migrated.json`` (Prefect version, revision): the next server of this directory skips the check."""
    if os.environ.get("PREFECT_API_DATABASE_MIGRATE_ON_START") == "false" or \
            os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL") != f"sqlite+aiosqlite:///{directory / 'prefect.db'}":
        return
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.2)
    rev = db_revision(directory)
    if rev is not None:
        from .fsmodes import write_private

        tmp = directory / f".migrated.json.{os.getpid()}"
        with contextlib.suppress(OSError):
            write_private(tmp, json.dumps({"prefect": prefect_version(), "revision": rev}))
            os.replace(tmp, directory / "migrated.json")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pitstop.prefect_serve")
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--idle", type=float, required=True)
    args = ap.parse_args(argv)
    os.umask(0o077)  # the database and its journal are the server's own
    sock = socket.socket(fileno=int(os.environ.pop(LISTEN_FD_ENV)))
    importing = True

    def stop() -> None:
        # not serving yet (loading Prefect's server, or checking migrations: SQLite and PostgreSQL roll back a
        # migration cut short): nothing to finish, and uvicorn would only see should_exit once it serves
        if importing or not server.started:
            os._exit(0)
        server.should_exit = True  # a graceful stop
        threading.Timer(STOP_GRACE_S, lambda: os._exit(0)).start()

    threading.Thread(target=Watchdog(args.dir, args.idle, stop).run, name="pitstop-idle-watchdog",
                     daemon=True).start()
    import uvicorn
    from uvicorn.importer import import_from_string

    config = uvicorn.Config(import_from_string(APP), factory=True, log_level="error", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    importing = False
    threading.Thread(target=note_migrated, args=(args.dir, server), daemon=True).start()
    server.run(sockets=[sock])
    # the database is closed; Prefect's non-daemon helper threads must not keep the process
    os._exit(0 if server.started else 3)


if __name__ == "__main__":
    main()
