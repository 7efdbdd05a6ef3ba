"""Real runs shared by the report tests: the demo monthly runbook (and an emergency run) on the
embedded PostgreSQL, with canary secrets in every secret slot of the config and a real HTTP
receiver behind the apprise webhook channels."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.conftest import demo_config, run_cli

CANARIES = {
    "PITSTOP_T_DB_PASSWORD": "canary-db-pw-7f3a91c2",
    "PITSTOP_T_S3_ACCESS": "canary-access-AKIA5QX2",
    "PITSTOP_T_S3_SECRET": "canary-secret-9d8e7f6a5b",
    "PITSTOP_T_HOOK_TOKEN": "canary-hook-token-c0ffee11",
}


class Receiver(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.startswith("/fail"):
            self.send_response(500)
            self.end_headers()
            return
        Receiver.received.append({"path": self.path, "body": json.loads(body or b"{}")})
        self.send_response(200)
        self.end_headers()


@pytest.fixture(scope="package")
def receiver() -> Iterator[tuple[int, list[dict[str, Any]]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], Receiver.received
    server.shutdown()
    server.server_close()


def _database(pg_socket: str) -> str:
    from pitstop.demo import SCHEMA, SEED

    name = f"r_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(host=pg_socket, dbname="postgres", user="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(host=pg_socket, dbname=name, user="postgres") as conn:
        conn.execute(SCHEMA)
        conn.execute(SEED)
    return name


def make_secret_env(base: Path, pg_data_dir: Path, pg_socket: str, port: int) -> tuple[Path, dict[str, str]]:
    """A demo environment whose every secret slot (``*_env``) names a canary variable."""
    from pitstop.config import load_config
    from pitstop.demo import setup_hosts

    cfg = demo_config(base / "state", pg_data_dir, _database(pg_socket))
    cfg["database"]["password_env"] = "PITSTOP_T_DB_PASSWORD"
    cfg["storage"].update({"access_key_env": "PITSTOP_T_S3_ACCESS", "secret_key_env": "PITSTOP_T_S3_SECRET"})
    cfg["notifications"]["channels"]["hook"] = {"kind": "apprise", "url_env": "PITSTOP_T_HOOK_URL"}
    path = base / "env.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    setup_hosts(load_config(str(path)))
    env = dict(CANARIES)
    env["PITSTOP_T_HOOK_URL"] = f"json://127.0.0.1:{port}/hook/{CANARIES['PITSTOP_T_HOOK_TOKEN']}"
    return path, env


@pytest.fixture(scope="package")
def secret_env(tmp_path_factory: pytest.TempPathFactory, pg_data_dir: Path, pg_socket: str,
               receiver: tuple[int, list[dict[str, Any]]]) -> tuple[Path, dict[str, str]]:
    return make_secret_env(tmp_path_factory.mktemp("reports"), pg_data_dir, pg_socket, receiver[0])


def _run(env_path: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    proc = run_cli(*args, "--env", str(env_path), "--runbook", "monthly", "--engine", "local", "--json", env=env)
    assert proc.returncode in (0, 1), proc.stderr
    info = json.loads(proc.stdout)
    return {**info, "run_dir": Path(info["run_dir"]), "proc": proc}


@pytest.fixture(scope="package")
def monthly_run(secret_env: tuple[Path, dict[str, str]]) -> dict[str, Any]:
    """One real monthly run (local engine) with canary secrets; report tests only read it."""
    info = _run(*secret_env, "run")
    assert info["status"] == "succeeded", info["proc"].stderr
    return info


@pytest.fixture(scope="package")
def emergency_run(secret_env: tuple[Path, dict[str, str]], monthly_run: dict[str, Any]) -> dict[str, Any]:
    return _run(*secret_env, "emergency", "--reason", "disk on db-1 filling up after a runaway log")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
