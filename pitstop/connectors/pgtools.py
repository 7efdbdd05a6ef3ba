"""Which PostgreSQL client tools (pg_dump, pg_restore, psql) pitstop runs against a given server.

``pg_dump`` refuses to dump a server of a newer major version, and ``pg_restore`` cannot read an
archive written by a newer ``pg_dump``. So the client directory is chosen by the *server's* major:

1. ``database.pg_bin_dir`` when the config sets it (then it must be new enough, or the run is refused);
2. otherwise every known location — ``/usr/lib/postgresql/<N>/bin`` (Debian/Ubuntu), the bundled
   client of the ``pgserver`` wheel, ``/usr/pgsql-<N>/bin`` (RHEL), and ``PATH`` — preferring the same
   major as the server, else the oldest major that is newer.

When no candidate is new enough, :class:`ClientTooOld` (bad input, exit 2) names the server's version,
the client found and the fix, pointing at the config's ``database`` section, before anything of the run
changes: at the start of ``pitstop run`` (before the lock, the run folder or any notification) and, when
the database answers, already at ``pitstop validate`` (:func:`probe`).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..config import EnvironmentConfig
from ..errors import InputError, Problem

TOOLS = ("pg_dump", "pg_restore", "psql")


class ClientTooOld(InputError):
    """No pg_dump/pg_restore at least as new as the server: a config or installation problem."""


@dataclass(frozen=True)
class ClientDir:
    path: Path
    major: int

    def tool(self, name: str) -> str:
        return str(self.path / name)


@functools.cache
def client_major(bin_dir: Path) -> int | None:
    """The major version of ``bin_dir/pg_dump`` (None if it is missing or does not answer)."""
    exe = bin_dir / "pg_dump"
    if not exe.is_file():
        return None
    try:
        out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(m.group(1)) if m else None


def known_dirs() -> list[Path]:
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin")) + sorted(Path("/usr").glob("pgsql-*/bin"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

        dirs.append(Path(pgserver.__file__).parent / "pginstall" / "bin")
    except ImportError:  # pragma: no cover - pgserver is a dependency
        pass
    on_path = shutil.which("pg_dump")
    if on_path:
        dirs.append(Path(on_path).resolve().parent)
    return list(dict.fromkeys(d for d in dirs if (d / "pg_dump").is_file()))


def _problem(source: str, key: str, message: str) -> Problem:
    """A problem pointing at ``database.<key>`` (or ``database``) of the config file, when there is one."""
    from .. import yamlfile

    loc = ["database", key] if key else ["database"]
    line = None
    if source and Path(source).is_file():
        try:
            line = yamlfile.load(Path(source)).line_of(loc)
        except InputError:  # pragma: no cover - the config was loaded moments ago
            line = None
    return Problem(file=source, line=line, where=".".join(loc) if source else "", message=message)


def choose(server_major: int, server_version: str, configured: Path | None, source: str = "") -> ClientDir:
    """The client directory for a server of ``server_major``; :class:`ClientTooOld` if none fits."""
    if configured is not None:
        major = client_major(configured)
        if major is None:
            need = f"PostgreSQL {server_version} needs pg_dump/pg_restore {server_major} or newer: " \
                if server_version else ""
            raise ClientTooOld([_problem(source, "pg_bin_dir", f"{configured} holds no working pg_dump; {need}point "
                                         "database.pg_bin_dir at the bin directory of PostgreSQL client tools as new "
                                         "as the server; nothing was changed")])
        if major < server_major:
            raise ClientTooOld([_problem(source, "pg_bin_dir", f"PostgreSQL {server_version} needs pg_dump/pg_restore "
                                         f"{server_major} or newer, and database.pg_bin_dir ({configured}) holds "
                                         f"pg_dump {major}: point database.pg_bin_dir at PostgreSQL {server_major} "
                                         f"(or newer) client tools, e.g. /usr/lib/postgresql/{server_major}/bin from "
                                         f"postgresql-client-{server_major}; nothing was changed")])
        return ClientDir(configured, major)
    found = [(m, d) for d in known_dirs() if (m := client_major(d)) is not None]
    fits = sorted((m, str(d)) for m, d in found if m >= server_major)
    if fits:
        major, path = fits[0]
        return ClientDir(Path(path), major)
    newest = max((m for m, _ in found), default=None)
    have = f"the newest pg_dump found is {newest}" if newest else "no pg_dump was found"
    raise ClientTooOld([_problem(source, "", f"PostgreSQL {server_version} needs pg_dump/pg_restore {server_major} "
                                 f"or newer, and {have} (looked in /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin, the "
                                 f"pgserver wheel and PATH): install postgresql-client-{server_major} and set "
                                 f"database.pg_bin_dir to its bin directory; nothing was changed")])


@dataclass(frozen=True)
class Probe:
    """What ``pitstop validate`` learnt about the client tools: the choice, or why it could not look."""

    clients: ClientDir | None
    server_version: str | None
    note: str

    def as_json(self) -> dict[str, object]:
        return {"checked": self.clients is not None, "server_version": self.server_version,
                "pg_bin_dir": str(self.clients.path) if self.clients else None,
                "client_major": self.clients.major if self.clients else None, "note": self.note}


def probe(cfg: EnvironmentConfig, timeout_s: int = 5) -> Probe:
    """For ``pitstop validate`` of a runbook that dumps or restores: ask the server its version (one
    attempt, at most ``timeout_s``) and choose the client tools. :class:`ClientTooOld` (exit 2) when the
    server answers and nothing fits; a server that cannot be reached is only a note (the run checks
    again before anything changes). The embedded demo server always uses its own bundled tools."""
    import psycopg

    from ..errors import PitstopError
    from .postgres import Database

    if cfg.database.embedded:
        return Probe(None, None, "embedded server: its bundled client tools are used")
    bin_dir = Path(cfg.database.pg_bin_dir).expanduser() if cfg.database.pg_bin_dir else None
    if bin_dir is not None and client_major(bin_dir) is None:
        choose(0, "", bin_dir, cfg.source)  # refused whatever the server: no pg_dump there
    try:
        db = Database(cfg)
        info = {**db.conninfo(), "connect_timeout": min(timeout_s, cfg.database.connect_timeout)}
        with psycopg.connect(**info) as conn:
            row = conn.execute("SELECT current_setting('server_version_num')::int, "
                               "current_setting('server_version')").fetchone()
    except (PitstopError, psycopg.Error) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Probe(None, None, f"client tools not checked, the server could not be asked its version "
                                 f"({reason}); the run checks them again before anything changes")
    assert row is not None
    version = str(row[1])
    clients = choose(int(row[0]) // 10000, version, bin_dir, cfg.source)
    return Probe(clients, version, f"PostgreSQL {version}: pg_dump/pg_restore {clients.major} from {clients.path}")
