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
the database answers, already at ``pitstop validate`` (:func:`pitstop.connectors.postgres.probe`).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

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
