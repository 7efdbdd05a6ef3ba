"""Real runs shared by the report tests: the demo monthly runbook (and an emergency run) on the
embedded PostgreSQL, with canary secrets in every secret slot of the config and a real HTTP
receiver behind the apprise webhook channels."""

from __future__ import annotations

import http.server
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from pitstop.errors import InputError
from tests.conftest import demo_config, run_cli
from tests.reliability.corpus import CASES
from tests.reliability.helpers import DEMO_CONFIG, MONTHLY, kill_when, point_at, start

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
    """A real emergency run that went the whole way: the secret-leak tests read what every step wrote, so
    a run that failed early (and wrote little) must not pass them."""
    info = _run(*secret_env, "emergency", "--reason", "disk on db-1 filling up after a runaway log")
    assert info["proc"].returncode == 0 and info["status"] == "succeeded", info["proc"].stderr
    report = json.loads((info["run_dir"] / "report.json").read_text())
    assert report["trigger"] == "emergency" and report["status"] == "succeeded"
    stages = {stage["name"]: stage["status"] for stage in report["stages"]}
    assert stages.get("post-verification") == "succeeded", stages  # it went the whole way, not only its start
    assert not [st for stage in report["stages"] for st in stage["steps"] if st["status"] == "failed"], stages
    return info


@dataclass
class Corpus:
    env_path: Path
    env: dict[str, str]
    runs: dict[str, Path]


def _runbook(path: Path, stages: list[dict[str, Any]], kind: str = "custom") -> str:
    path.write_text(yaml.safe_dump({"name": path.stem, "kind": kind, "expected_downtime": "5m",
                                    "stages": stages}, sort_keys=False))
    return str(path)


def _cli_run(env_path: Path, env: dict[str, str], *args: str) -> tuple[Path, Any]:
    res = run_cli(*args, "--env", str(env_path), "--engine", "local", "--json", env=env)
    assert "Traceback" not in res.stderr, res.stderr
    info = json.loads(res.stdout)
    return Path(info["run_dir"]), res


@pytest.fixture(scope="package")
def corpus(tmp_path_factory: pytest.TempPathFactory, pg_data_dir: Path, pg_socket: str,
           receiver: tuple[int, list[dict[str, Any]]]) -> Corpus:
    """Real runs of every ending, through the CLI, in an environment of their own (see test_replay.py)."""
    base = tmp_path_factory.mktemp("replay")
    env_path, env = make_secret_env(base, pg_data_dir, pg_socket, receiver[0])
    state = base / "state"
    runs: dict[str, Path] = {}

    # killed inside the window (SIGKILL as soon as maintenance is on), then resumed to the end
    proc = start("run", "--env", str(env_path), "--runbook", "monthly", "--engine", "local", "--json", env=env)
    killed = kill_when(proc, state / "runs", lambda evs: any(e.get("kind") == "maintenance.on" for e in evs))
    assert killed is not None and proc.returncode == -signal.SIGKILL
    resumed = run_cli("resume", killed.name, "--env", str(env_path), "--engine", "local", "--json", env=env)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
    runs["killed-and-resumed"] = killed

    # the killed run rotated every log: an old log again gives this monthly run work inside its window (a run with
    # none would need no window, pitstop/need.py), so its log has maintenance on/off like a first run's
    from pitstop.config import load_config

    cfg = load_config(str(env_path))
    for h in cfg.hosts.values():
        again = cfg.resolve(h.root or "") / "var" / "log" / "app" / "app-again.log"
        again.write_text("old log\n")
        os.utime(again, (time.time() - 3 * 86400,) * 2)
    runs["monthly"], res = _cli_run(env_path, env, "run", "--runbook", "monthly")
    assert res.returncode == 0, res.stderr

    newest_dump = f"ls -t {state}/storage/backups/*/*/*.dump | head -1"
    truncate = _runbook(base / "verify-fails.yaml", [
        {"name": "pre-backup", "steps": [
            {"uses": "backup.postgres"},
            {"uses": "host.command", "name": "damage the stored dump", "destructive": False, "targets": "app",
             "window": "outside", "with": {"argv": ["sh", "-c", f'truncate -s 64 "$({newest_dump})"']}},
            {"uses": "backup.verify"}]},
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on"}]},
        {"name": "database-cleanup", "steps": [{"uses": "cleanup.retention"}]},
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off"}]}], kind="monthly")
    runs["backup-verify-failed"], res = _cli_run(env_path, env, "run", "--runbook", truncate)
    assert res.returncode == 1, res.stderr  # the run's exit code: it failed, its report says so

    closed_port = _runbook(base / "post-verification-fails.yaml", [
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on"}]},
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off"}]},
        {"name": "post-verification", "steps": [
            {"uses": "check.tcp", "name": "application port answers",
             "with": {"host": "127.0.0.1", "port": 9, "timeout_s": 1}}]}])
    runs["post-verification-failed"], res = _cli_run(env_path, env, "run", "--runbook", closed_port)
    assert res.returncode == 1, res.stderr

    failing = _runbook(base / "failing.yaml", [
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on"}]},
        {"name": "server-tuning", "steps": [{"uses": "host.command", "destructive": False, "targets": "app",
                                             "with": {"argv": ["false"]}}]},
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off"}]}])
    runs["failed-step"], res = _cli_run(env_path, env, "run", "--runbook", failing)
    assert res.returncode == 1, res.stderr

    runs["emergency"], res = _cli_run(env_path, env, "emergency", "--runbook", "emergency-disk",
                                      "--reason", "disk on db-1 at 97%")
    assert res.returncode == 0, res.stderr

    # the reliability suite's bad-input corpus: every case is refused before a run folder exists
    from pitstop.runner import execute

    bad = base / "bad-inputs"
    for i, case in enumerate(CASES):
        d = bad / f"case{i}"
        d.mkdir(parents=True)
        cfg_text = DEMO_CONFIG if case.file == "runbook" else case.edit(DEMO_CONFIG)
        rb_text = case.edit(MONTHLY) if case.file == "runbook" else MONTHLY
        (d / "env.yaml").write_text(point_at(cfg_text, d / "state", pg_data_dir, "postgres"))
        (d / "runbook.yaml").write_text(rb_text)
        try:
            result = execute(str(d / "env.yaml"), str(d / "runbook.yaml"))
        except InputError:
            assert not (d / "state").exists(), case.id
            continue
        runs[f"bad-input {case.id}"] = result.run_dir  # a case that ran: its log joins the corpus
    return Corpus(env_path, env, runs)
