"""PostgreSQL connector: connection settings in one object, psycopg 3 connections, tool binaries (and
``pitstop validate``'s probe of them, :func:`probe`).

Passwords come from the environment variable named in config and are handed to psycopg and to
``pg_dump``/``pg_restore`` through ``PGPASSWORD`` in the child's environment, never on a command line.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg

from ..config import EnvironmentConfig
from ..config.data import is_loopback  # noqa: F401 - the transport's check, defined once with sslmode's default
from ..errors import ConfigError, ConnectorError, PitstopError
from .pgtools import ClientDir, choose, client_major


class Database:
    def __init__(self, cfg: EnvironmentConfig):
        self.env = cfg
        self.cfg = cfg.database
        self._host: str | None = self.cfg.host
        self._port = self.cfg.port
        self._bin_dir: Path | None = Path(self.cfg.pg_bin_dir).expanduser() if self.cfg.pg_bin_dir else None
        self._clients: ClientDir | None = None
        if self.cfg.embedded:
            self._start_embedded()

    # -- embedded demo server -----------------------------------------------------------------------
    def _start_embedded(self) -> None:
        with warnings.catch_warnings():  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import pgserver  # the wheel ships PostgreSQL 16 and its client tools

        data_dir = self.env.resolve(self.cfg.data_dir)
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
                warnings.simplefilter("ignore")
                server = pgserver.get_server(data_dir, cleanup_mode=None)
        except Exception as exc:  # noqa: BLE001 - pgserver raises plain exceptions
            raise ConnectorError(f"could not start the embedded PostgreSQL in {data_dir}: {exc}") from None
        query = parse_qs(urlparse(server.get_uri()).query)
        self._host = query["host"][0]
        self._port = 5432
        if self._bin_dir is None:
            self._bin_dir = Path(pgserver.__file__).parent / "pginstall" / "bin"

    # -- connection settings ------------------------------------------------------------------------
    def _password(self) -> str | None:
        name = self.cfg.password_env
        if not name:
            return None
        value = os.environ.get(name)
        if value is None:
            raise ConfigError(f"{self.env.source}: database.password_env names ${name}, which is not set")
        return value

    def conninfo(self, dbname: str | None = None) -> dict[str, Any]:
        info: dict[str, Any] = {
            "host": self._host,
            "port": self._port,
            "dbname": dbname or self.cfg.dbname,
            "user": self.cfg.user,
            "connect_timeout": self.cfg.connect_timeout,
            "application_name": "pitstop",
        }
        if not self.cfg.embedded:
            info["sslmode"] = self.cfg.sslmode
        password = self._password()
        if password is not None:
            info["password"] = password
        return info

    def connect(self, dbname: str | None = None, autocommit: bool = False) -> psycopg.Connection:
        """One new connection. A server that is unreachable, starting or stopping raises
        :class:`~pitstop.pgretry.PgUnavailable` (retried by :mod:`pitstop.pgretry`); anything else
        (unknown role, bad password, missing database) a plain :class:`ConnectorError`."""
        from ..pgretry import PgUnavailable, connect_failure_is_transient

        try:
            return psycopg.connect(**self.conninfo(dbname), autocommit=autocommit)
        except psycopg.OperationalError as exc:
            # psycopg's message names host and database but never the password.
            message = str(exc).strip()
            if connect_failure_is_transient(message):
                raise PgUnavailable(f"cannot connect to PostgreSQL: {message}") from None
            raise ConnectorError(f"cannot connect to PostgreSQL: {message}") from None

    def tool_env(self, dbname: str | None = None) -> dict[str, str]:
        """Environment for pg_dump / pg_restore / psql (libpq variables; no argv secrets)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        info = self.conninfo(dbname)
        env.update({"PGHOST": str(info["host"]), "PGPORT": str(info["port"]), "PGUSER": str(info["user"]),
                    "PGDATABASE": str(info["dbname"]), "PGCONNECT_TIMEOUT": str(info["connect_timeout"]),
                    "PGAPPNAME": "pitstop"})
        if "sslmode" in info:
            env["PGSSLMODE"] = str(info["sslmode"])
        if "password" in info:
            env["PGPASSWORD"] = str(info["password"])
        return env

    @property
    def dbname(self) -> str:
        return self.cfg.dbname

    def describe(self) -> str:
        return f"{self.cfg.user}@{self._host}:{self._port}/{self.cfg.dbname}"

    # -- tools --------------------------------------------------------------------------------------
    def transport(self) -> dict[str, Any]:
        """How this connection travels: host, whether it is loopback (or a Unix socket) and whether TLS
        protects it (``pg_stat_ssl`` of this session, not what sslmode asked for)."""
        with self.connect() as conn:
            row = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
            host = conn.info.host
        return {"host": host, "loopback": is_loopback(host), "tls": bool(row and row[0]),
                "tls_version": row[1] if row else None, "sslmode": self.cfg.sslmode}

    def clients(self) -> ClientDir:
        """The client tools matching this server (pitstop.connectors.pgtools); asks the server once."""
        if self._clients is None:
            major, version = self.server_version()
            self._clients = choose(major, version, self._bin_dir, self.env.source)
        return self._clients

    def tool(self, name: str) -> str:
        """Path of a PostgreSQL client tool new enough for this server."""
        return self.clients().tool(name)

    def tool_major(self, name: str) -> int:
        return self.clients().major

    def server_version(self) -> tuple[int, str]:
        from ..pgretry import call

        def ask() -> tuple[int, str]:
            with self.connect() as conn:
                row = conn.execute("SELECT current_setting('server_version_num')::int, "
                                   "current_setting('server_version')").fetchone()
            assert row is not None
            return int(row[0]) // 10000, str(row[1])

        return call(None, "server_version", ask)


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
