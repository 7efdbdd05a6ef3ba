"""A real Prefect server (PostgreSQL 15 backed, UI on) for the approval tests on the Prefect engine."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.conftest import free_port
from tests.prefect.test_server_worker import PREFECT, system_pg  # noqa: F401 - fixture re-used


@pytest.fixture(scope="module")
def prefect_ui_server(system_pg: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:  # noqa: F811
    """``prefect server start`` on loopback with its UI, on a throw-away PostgreSQL database; the environment
    a CLI subprocess needs to reach it (PREFECT_API_URL ...)."""
    db = f"prefect_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(host=system_pg, dbname="postgres", user="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    port = free_port()
    home = tmp_path_factory.mktemp("prefect-ui-home")
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "true", "PREFECT_UI_API_URL": url, "PREFECT_API_URL": url,
           "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://postgres@/{db}?host={system_pg}"}
    log = (home / "server.log").open("w")
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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
    yield {"PREFECT_API_URL": url, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_URL": f"http://127.0.0.1:{port}"}
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
