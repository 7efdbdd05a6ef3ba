"""Shared fixtures: a real embedded PostgreSQL (pgserver), per-test databases seeded with the demo
application, per-test environments written as real YAML, a real Prefect API, and a CLI runner."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# the local Prefect API server a test's `pitstop run` starts in its state directory stops soon after (issue #22)
os.environ.setdefault("PITSTOP_PREFECT_IDLE", "5")


# -- markers: what a test needs from the machine ---------------------------------------------------------
# ``@pytest.mark.root`` (runs as root: files owned by other users, sshd, nginx) and
# ``@pytest.mark.services("sshd", ...)`` (system services installed by `make system-deps`). Outside CI they skip
# with the reason; in CI (``CI`` set) nothing is skipped: a missing service fails the test.
SERVICES = {"sshd": "/usr/sbin/sshd", "nginx": "/usr/sbin/nginx", "setpriv": "/usr/bin/setpriv",
            "postgresql-15": "/usr/lib/postgresql/15/bin/postgres"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "root: needs to run as root (skipped with the reason outside CI)")
    config.addinivalue_line("markers", "services(*names): needs these system services installed, e.g. sshd, nginx "
                                       "(`make system-deps`; skipped with the reason outside CI)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    in_ci = bool(os.environ.get("CI"))
    for item in items:
        if "ssh_lab" in getattr(item, "fixturenames", ()):  # the sshd lab runs Debian's sshd as root
            item.add_marker(pytest.mark.root)
            item.add_marker(pytest.mark.services("sshd"))
        if in_ci:
            continue
        if item.get_closest_marker("root") and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="needs root (CI runs it as root)"))
        wanted = [n for m in item.iter_markers("services") for n in m.args]
        missing = [n for n in wanted if not Path(SERVICES.get(n, n)).exists()]
        if missing:
            item.add_marker(pytest.mark.skip(reason=f"needs {', '.join(missing)} (make system-deps installs it)"))


@pytest.fixture(scope="session")
def pg_data_dir() -> Iterator[Path]:
    """One embedded PostgreSQL 16 for the whole session (pgserver), stopped and removed at the end.

    It lives in its own world-traversable temporary directory (pgserver runs the server as the
    unprivileged user `pgserver` when we are root; pytest's own temp dirs are private)."""
    import shutil
    import tempfile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        base = Path(tempfile.mkdtemp(prefix="pitstop-test-pg-"))
        base.chmod(0o755)
        data = base / "data"
        server = pgserver.get_server(data, cleanup_mode="stop")
    server.psql("select 1;")
    yield data
    server.cleanup()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_socket(pg_data_dir: Path) -> str:
    from urllib.parse import parse_qs, urlparse

    import pgserver

    uri = pgserver.get_server(pg_data_dir, cleanup_mode=None).get_uri()
    return parse_qs(urlparse(uri).query)["host"][0]


@pytest.fixture
def seeded_db(pg_data_dir: Path, pg_socket: str) -> Iterator[str]:
    """A fresh database seeded with the demo application; dropped after the test."""
    from pitstop.demo import SCHEMA, SEED

    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(host=pg_socket, dbname="postgres", user="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(host=pg_socket, dbname=name, user="postgres") as conn:
        conn.execute(SCHEMA)
        conn.execute(SEED)
    yield name
    with psycopg.connect(host=pg_socket, dbname="postgres", user="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_conn(pg_socket: str) -> Callable[[str], psycopg.Connection]:
    def connect(dbname: str) -> psycopg.Connection:
        return psycopg.connect(host=pg_socket, dbname=dbname, user="postgres", autocommit=True)

    return connect


def demo_config(state_dir: Path, pg_data_dir: Path, dbname: str) -> dict[str, Any]:
    """The demo config, pointed at the session's PostgreSQL and a per-test state directory."""
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["name"] = "test"
    cfg["state_dir"] = str(state_dir)
    cfg["database"].update({"embedded": True, "data_dir": str(pg_data_dir), "dbname": dbname})
    # the demo's blackouts are real dates: a run on one of them would be refused (exit 2), so the suite
    # drops them; tests of blackouts set their own (with a fixed "now" or today's date)
    cfg.get("schedules", {}).pop("blackouts", None)
    return cfg


@pytest.fixture
def make_env(tmp_path: Path, pg_data_dir: Path, seeded_db: str) -> Callable[..., Path]:
    """Write a config YAML for this test (demo config + ``overrides``) and set up its hosts.

    Returns the config path; pass it as ``--env``. ``mutate(cfg_dict)`` can edit it further.
    """

    def make(mutate: Callable[[dict[str, Any]], None] | None = None, name: str = "env.yaml") -> Path:
        from pitstop.config import load_config
        from pitstop.demo import setup_hosts

        cfg = demo_config(tmp_path / "state", pg_data_dir, seeded_db)
        if mutate:
            mutate(cfg)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        setup_hosts(load_config(str(path)))
        return path

    return make


@pytest.fixture(scope="session")
def ssh_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The suite's one lab of real OpenSSH servers on loopback (tests/fleet/sshlab.py), for every area that
    reaches hosts over SSH (fleet, maintenance, checks, reliability); tests start the hosts they need."""
    from tests.fleet.sshlab import SshLab

    lab = SshLab(tmp_path_factory.mktemp("sshlab"))
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A real (temporary) Prefect API server; CLI subprocesses reach it through PREFECT_API_URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        url = PREFECT_API_URL.value()
        old = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            if old is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = old


@contextlib.contextmanager
def prefect_server_on_postgres(pg_host: str, home: Path, *, ui: bool = False) -> Iterator[dict[str, str]]:
    """``prefect server start`` on loopback, backed by a new database of the PostgreSQL server whose socket
    directory is ``pg_host``; yields the environment a client or a CLI subprocess needs to reach it."""
    import signal

    import httpx

    db = f"prefect_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(host=pg_host, dbname="postgres", user="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "true" if ui else "false", "PREFECT_API_URL": url,
           "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://postgres@/{db}?host={pg_host}"}
    if ui:
        env["PREFECT_UI_API_URL"] = url
    log = (home / "server.log").open("w")
    server = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
                               "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (home / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        else:
            raise AssertionError("prefect server did not start: " + (home / "server.log").read_text()[-3000:])
        with psycopg.connect(host=pg_host, dbname=db, user="postgres") as conn:  # really backed by PostgreSQL
            assert conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'flow_run'"
                                ).fetchone()[0] == 1
        info = {"PREFECT_API_URL": url, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        if ui:
            info["PREFECT_UI_URL"] = f"http://127.0.0.1:{port}"
        yield info
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``address`` right now (the one helper of the suite for it)."""
    import socket

    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
            cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run the real ``pitstop`` console entry point in a subprocess."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pitstop.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd)


def cli_on_tty(*args: str, columns: int, extra: dict[str, str] | None = None) -> str:
    """The real CLI with stdout on a pseudo-terminal ``columns`` wide (rich sees a terminal: the table path);
    what the terminal received, raw (ANSI codes and carriage returns kept). Asserts exit 0."""
    import pty

    master, slave = pty.openpty()
    env = {**os.environ, **(extra or {}), "COLUMNS": str(columns), "LINES": "50", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "pitstop.cli", *args], stdout=slave, stderr=subprocess.PIPE,
                            cwd=ROOT, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    return b"".join(chunks).decode("utf-8", "replace")


def report_of(stdout: str) -> dict[str, Any]:
    """The report.json named by ``--json`` output."""
    info = json.loads(stdout)
    return json.loads(Path(info["report"]).read_text())
