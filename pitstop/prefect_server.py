"""The local Prefect API server of a state directory, shared by every pitstop command that uses it.

Without ``PREFECT_API_URL``, ``pitstop run`` (and ``emergency``, ``resume``, ``demo``) used to start
Prefect's ephemeral API server for each run: a ``uvicorn`` subprocess that imported Prefect's server,
checked the database migrations and registered blocks (seconds), and that outlived a killed run with
parent pid 1. Instead, one server per state directory is started on demand and reused by the commands
that come after it; it stops itself once no command has used it for ``PITSTOP_PREFECT_IDLE`` seconds
(default 300; ``0``: as soon as the last one ends). Nothing here imports Prefect: the server is a
process (``python -m pitstop.prefect_serve``) talked to over HTTP on loopback.

Everything lives in ``<state_dir>/prefect/`` (0700):

* ``server.lock``: held (``flock``, exclusive) by whoever checks, starts or stops the server, so commands
  starting together agree on one server and one set of migrations on one database;
* ``clients.lock``: every command using the server holds a shared ``flock`` on it for its lifetime. The
  kernel drops it when the process ends, however it ends (SIGKILL included): the server sees it is idle
  when it can take the lock exclusively, so a killed command never keeps it alive;
* ``server.json`` (0600): pid, port and the random HTTP basic-auth string of the running server. It is
  only ever used to connect to 127.0.0.1 (no process is signalled on its word);
* ``prefect.db``: the server's SQLite database (unless ``PREFECT_API_DATABASE_CONNECTION_URL`` is set);
  ``server.log``: its output.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, PitstopError

IDLE_ENV = "PITSTOP_PREFECT_IDLE"
DEFAULT_IDLE_S = 300.0
START_TIMEOUT_S = 180.0  # a cold server on a loaded 2-core machine needs 5-40 s
SERVE_MODULE = "pitstop.prefect_serve"
LISTEN_FD_ENV = "PITSTOP_PREFECT_LISTEN_FD"
LOCAL_ENV = "PITSTOP_PREFECT_LOCAL"  # set in a command whose Prefect API is its state directory's local server
# what the server process inherits from the command that starts it: never the environment's secrets
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH",
               "SSL_CERT_FILE", "SSL_CERT_DIR", "DO_NOT_TRACK")
_CLIENT_ONLY = ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING", "PREFECT_PROFILES_PATH")


class PrefectServerError(PitstopError, RuntimeError):
    """The local Prefect API server could not be started or reached."""


@dataclass(frozen=True)
class ServerRecord:
    """``server.json``: what a command needs to use the running server (validated when read)."""

    pid: int
    port: int
    auth: str
    started_at: float

    @classmethod
    def parse(cls, raw: str) -> ServerRecord | None:
        try:
            doc = json.loads(raw)
            rec = cls(pid=doc["pid"], port=doc["port"], auth=doc["auth"], started_at=doc["started_at"])
        except (ValueError, KeyError, TypeError):
            return None
        ok = (type(rec.pid) is int and rec.pid > 1 and type(rec.port) is int and 0 < rec.port < 65536
              and isinstance(rec.auth, str) and 20 <= len(rec.auth) <= 200 and rec.auth.isascii()
              and isinstance(rec.started_at, int | float))
        return rec if ok else None


@dataclass
class LocalServer:
    """The state directory's server as this command uses it; holding it keeps the server alive."""

    directory: Path
    record: ServerRecord
    started: bool  # True: this command started it (cold); False: it was running (warm)
    _client_fd: int

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.record.port}/api"

    def client_env(self) -> dict[str, str]:
        """Set in ``os.environ`` before Prefect is imported: Prefect's client then talks to this server."""
        return {"PREFECT_API_URL": self.api_url, "PREFECT_API_AUTH_STRING": self.record.auth, LOCAL_ENV: "1"}

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> float:
        """Block until the server answers its health check; returns the seconds waited."""
        t0 = time.monotonic()
        while True:
            if _healthy(self.record.port):
                return time.monotonic() - t0
            if not is_server_process(self.record.pid, self.directory):
                raise PrefectServerError(f"the local Prefect API server stopped while starting; its log: "
                                         f"{self.directory / 'server.log'}{_log_tail(self.directory)}")
            if time.monotonic() - t0 > timeout:
                raise PrefectServerError(f"the local Prefect API server did not answer within {timeout:.0f} s; "
                                         f"its log: {self.directory / 'server.log'}")
            time.sleep(0.05)

    def release(self) -> None:
        """Stop counting as a client (the process ending does the same)."""
        with contextlib.suppress(OSError):
            os.close(self._client_fd)

    def stop_if_unused(self) -> None:
        """Release, and if no other command uses the server, have it stop now rather than when idle: its
        record is removed (under the server lock), and a server nobody recorded stops at once."""
        with _locked(self.directory / "server.lock") as _, contextlib.closing(_Fd(self.directory)) as probe:
            self.release()
            try:
                fcntl.flock(probe.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another command joined meanwhile: the server stays for it
            rec = read_record(self.directory)
            if rec is not None and rec.pid == self.record.pid:
                with contextlib.suppress(OSError):
                    (self.directory / "server.json").unlink()


class _Fd:
    def __init__(self, d: Path) -> None:
        self.fd = _open_lock(d / "clients.lock")

    def close(self) -> None:
        os.close(self.fd)


def is_local_api() -> bool:
    """Is this process's Prefect API the state directory's local server (nobody else is meant to reach it,
    as with Prefect's ephemeral API): e.g. an approval waits on a file, not a Prefect pause form."""
    return os.environ.get(LOCAL_ENV) == "1" and bool(os.environ.get("PREFECT_API_URL"))


def idle_seconds() -> float:
    raw = os.environ.get(IDLE_ENV, "").strip()
    if not raw:
        return DEFAULT_IDLE_S
    from .units import parse_duration

    try:
        value = float(raw) if raw.replace(".", "", 1).isdigit() else parse_duration(raw).total_seconds()
    except ValueError:
        value = -1.0
    if not 0 <= value <= 7 * 86400:
        raise InputError(f"${IDLE_ENV}: expected seconds or a duration such as 5m, at most 7d (got {raw!r})")
    return value


def server_dir(state_dir: Path) -> Path:
    from .fsmodes import private_dir

    d = state_dir / "prefect"
    if d.is_symlink() or (d.exists() and not d.is_dir()):
        raise PrefectServerError(f"{d} is not a directory: the local Prefect API server needs it")
    return private_dir(d)


def join(state_dir: Path) -> LocalServer:
    """Use the state directory's server, starting it if none runs. Returns at once (the server may still be
    starting: :meth:`LocalServer.wait_ready`); the caller counts as a client until it exits."""
    idle = idle_seconds()
    d = server_dir(state_dir)
    with _locked(d / "server.lock"):
        client_fd = _open_lock(d / "clients.lock")
        fcntl.flock(client_fd, fcntl.LOCK_SH)  # counted as a client before deciding: the server cannot stop now
        rec = read_record(d)
        if rec is not None and is_server_process(rec.pid, d):
            return LocalServer(d, rec, started=False, _client_fd=client_fd)
        try:
            rec = _start(d, idle)
        except BaseException:
            os.close(client_fd)
            raise
        return LocalServer(d, rec, started=True, _client_fd=client_fd)


def read_record(d: Path) -> ServerRecord | None:
    try:
        fd = os.open(d / "server.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with open(fd, encoding="utf-8") as fh:
        return ServerRecord.parse(fh.read(4096))


def write_record(d: Path, rec: ServerRecord) -> None:
    from .fsmodes import write_private

    tmp = d / f".server.json.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    write_private(tmp, json.dumps(rec.__dict__))
    os.replace(tmp, d / "server.json")


def is_server_process(pid: int, d: Path) -> bool:
    """Is ``pid`` alive and the server process of directory ``d`` (not a reused pid)?"""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and SERVE_MODULE.encode() in argv and str(d).encode() in argv


def api_servers_of(prefect_home: Path) -> list[int]:
    """Every Prefect API server process on this machine started with ``PREFECT_HOME=prefect_home``: Prefect's
    own ephemeral uvicorn, this module's shared one, or ``prefect server start`` (what an operator looks for
    when a cron box accumulates servers; the benchmarks' and tests' orphan count)."""
    marker = f"PREFECT_HOME={prefect_home}".encode()
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes()
            if not any(k in cmd for k in (b"prefect.server.api.server", SERVE_MODULE.encode(), b"server\0start")):
                continue
            if marker in (p / "environ").read_bytes().split(b"\0"):
                found.append(int(p.name))
        except OSError:
            continue
    return found


def server_env(d: Path, auth: str, fd: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k in _PASSED_ENV or (k.startswith("PREFECT_") and k not in _CLIENT_ONLY)}
    if "PREFECT_API_DATABASE_CONNECTION_URL" not in env:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{d / 'prefect.db'}"
        if "PREFECT_API_DATABASE_MIGRATE_ON_START" not in env and migrated(d):
            env["PREFECT_API_DATABASE_MIGRATE_ON_START"] = "false"  # alembic's check alone costs 1-2 s here
    env.update({
        "PREFECT_SERVER_API_AUTH_STRING": auth,
        "PREFECT_MEMO_STORE_PATH": str(d / "memo_store.toml"),  # block registration done once per database
        "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT__SERVER_EPHEMERAL": "1",  # only the services an ephemeral server runs: starts fast
        "PREFECT_LOGGING_SERVER_LEVEL": env.get("PREFECT_LOGGING_SERVER_LEVEL", "WARNING"),
        "PYDANTIC_DISABLE_PLUGINS": os.environ.get("PYDANTIC_DISABLE_PLUGINS", "__all__"),
        LISTEN_FD_ENV: str(fd),
    })
    return env


def db_revision(d: Path) -> str | None:
    """The alembic revision the state directory's Prefect database is at (read-only), or None."""
    import sqlite3

    db = d / "prefect.db"
    if db.is_symlink() or not db.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)) as conn:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def prefect_version() -> str:
    from importlib.metadata import version

    return version("prefect")


def migrated(d: Path) -> bool:
    """Did a server of this Prefect version migrate this very database (``migrated.json``, written by the server
    once it was up, names the version and the revision the database is still at)? Then the next one skips the
    check."""
    try:
        fd = os.open(d / "migrated.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, encoding="utf-8") as fh:
            mark = json.loads(fh.read(4096))
    except (OSError, ValueError):
        return False
    if not isinstance(mark, dict) or mark.get("prefect") != prefect_version():
        return False
    rev = db_revision(d)
    return rev is not None and mark.get("revision") == rev


def _start(d: Path, idle: float) -> ServerRecord:
    """Start the server process (the lock is held). It listens on a socket bound here, so its port is
    known at once and no other process can take it while the server boots."""
    from .fsmodes import private_opener

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        auth = secrets.token_urlsafe(32)
        argv = [sys.executable, "-m", SERVE_MODULE, "--dir", str(d), "--idle", str(idle)]
        # a session of its own: a Ctrl-C or hang-up of this terminal is not the end of a shared server
        with open(d / "server.log", "ab", opener=private_opener) as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603
                                    env=server_env(d, auth, sock.fileno()), pass_fds=(sock.fileno(),),
                                    start_new_session=True)
        rec = ServerRecord(pid=proc.pid, port=int(sock.getsockname()[1]), auth=auth, started_at=time.time())
        write_record(d, rec)
        return rec
    finally:
        sock.close()


def _healthy(port: int) -> bool:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/api/health")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _log_tail(d: Path) -> str:
    try:
        lines = [x for x in (d / "server.log").read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return f" (last line: {lines[-1][:300]})" if lines else ""


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


@contextlib.contextmanager
def _locked(path: Path, timeout: float = 120.0) -> Iterator[int]:
    fd = _open_lock(path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PrefectServerError(f"{path} stayed locked for {timeout:.0f} s (another pitstop command "
                                             "is starting or stopping the local Prefect API server)") from None
                time.sleep(0.02)
        yield fd
    finally:
        os.close(fd)
