"""The local Prefect API server of a state directory (issue #22): shared by the commands that use it, stopped
when idle, never left behind by a killed run, started once by commands starting together; and the run's first
line is printed before Prefect (or even the config) is loaded.

Real Prefect, real processes: every ``pitstop run`` here goes through ``--engine prefect`` without
``PREFECT_API_URL``, with a Prefect home of its own per test (so the processes of a test are found by it).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.conftest import ROOT, run_cli

CHECK_ONLY = {"name": "tiny", "kind": "custom", "stages": [
    {"name": "preflight", "steps": [{"uses": "check.postgres_connect"}]}]}
HOLD = {"name": "hold", "kind": "custom", "stages": [
    {"name": "preflight", "steps": [{"uses": "check.postgres_connect"}]},
    {"name": "server-tuning", "steps": [{
        "uses": "host.command", "name": "wait for release", "targets": "app", "destructive": False,
        "window": "outside", "with": {"argv": ["sh", "-c", "while [ ! -f release ]; do sleep 0.1; done"]}}]}]}


def runbook(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def state_of(env: Path) -> Path:
    return Path(yaml.safe_load(env.read_text())["state_dir"])


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # these commands must find no Prefect server configured: the suite's session server (prefect_api) sets
    # PREFECT_API_URL in this process once a test used it, and run_cli passes os.environ on
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return tmp_path / "prefect-home"


def cli_env(home: Path, idle: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return {**env, "COLUMNS": "200", "PREFECT_HOME": str(home), "PITSTOP_PREFECT_IDLE": str(idle)}


def start(args: list[str], env: dict[str, str], out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pitstop.cli", *args], stdout=out.open("w"),
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def prefect_servers(home: Path) -> list[int]:
    from pitstop.prefect_server import api_servers_of

    return api_servers_of(home)


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)


def holds(env: Path) -> bool:
    """Has a run of ``env`` reached the step that waits for its release file?"""
    return any("wait for release" in p.read_text() for p in state_of(env).glob("runs/*/audit.jsonl"))


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_first_line_comes_at_once_before_config_and_prefect(make_env: Any, tmp_path: Path, home: Path) -> None:
    """The run's first line (environment, runbook, what starts) is printed before the config is read; the
    server lock held here keeps Prefect from starting at all, and the line is there all the same."""
    env = make_env()
    srv = state_of(env) / "prefect"
    srv.mkdir(parents=True, mode=0o700)
    fd = os.open(srv / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    proc = start(["run", "--env", str(env), "--runbook", str(runbook(tmp_path, CHECK_ONLY))], cli_env(home, 2),
                 tmp_path / "out.txt")
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "tiny on env (manual): checking config and runbook, then starting the flow run through this " \
               "state directory's local Prefect API server" in first, first
        nxt = proc.stderr.readline()
        assert nxt.startswith("config: "), nxt  # the config is valid: the server would start now
        time.sleep(1)
        assert not (srv / "server.json").exists() and prefect_servers(home) == []  # Prefect is not started
    finally:
        os.close(fd)  # now the run may start the server
    rest = proc.communicate(timeout=600)[1]
    assert proc.returncode == 0, rest[-3000:] + (tmp_path / "out.txt").read_text()[-2000:]
    assert rest.splitlines()[0].startswith("runbook: "), rest
    assert "Prefect API: local server (started, pid " in rest and "Traceback" not in rest, rest


def test_server_shared_by_commands_and_stopped_when_idle(make_env: Any, tmp_path: Path, home: Path) -> None:
    env, rb = make_env(), runbook(tmp_path, CHECK_ONLY)
    srv = state_of(env) / "prefect"
    first = run_cli("run", "--env", str(env), "--runbook", str(rb), env=cli_env(home, 1))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Prefect API: local server (started, pid " in first.stderr, first.stderr
    from pitstop.prefect_server import db_revision, migrated

    wait_until(lambda: migrated(srv), 30, "the server notes that it checked its database's migrations")
    assert json.loads((srv / "migrated.json").read_text())["revision"] == db_revision(srv) is not None
    # a client of our own (what every pitstop command holds while it runs) keeps the server up
    fd = os.open(srv / "clients.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        pid = json.loads((srv / "server.json").read_text())["pid"]
        assert alive(pid) and prefect_servers(home) == [pid]
        time.sleep(3)  # three idle periods: a server with a client stays
        assert alive(pid)
        second = run_cli("run", "--env", str(env), "--runbook", str(rb), env=cli_env(home, 1))
        assert second.returncode == 0, second.stderr[-3000:]
        assert f"Prefect API: local server (running, pid {pid}) ready" in second.stderr, second.stderr
        assert prefect_servers(home) == [pid]
    finally:
        os.close(fd)
    wait_until(lambda: not alive(pid), 60, "the idle server stops")
    assert not (srv / "server.json").exists() and prefect_servers(home) == []
    # the next command starts a new one, on the same database (its runs are there)
    third = run_cli("run", "--env", str(env), "--runbook", str(rb), env=cli_env(home, 0))
    assert third.returncode == 0 and "(started, pid " in third.stderr, third.stderr[-3000:]
    assert (srv / "prefect.db").is_file()
    wait_until(lambda: prefect_servers(home) == [], 60, "a server with idle 0 stops when its last command ends")


@pytest.mark.parametrize("when", ["server starting", "mid-run"])
def test_sigkill_leaves_no_prefect_server_behind(make_env: Any, tmp_path: Path, home: Path, when: str) -> None:
    env = make_env()
    srv = state_of(env) / "prefect"
    rb = runbook(tmp_path, HOLD)
    proc = start(["run", "--env", str(env), "--runbook", str(rb)], cli_env(home, 1), tmp_path / "out.txt")
    try:
        if when == "server starting":
            wait_until(lambda: (srv / "server.json").exists() or bool(prefect_servers(home)), 300, "a server starts")
        else:
            wait_until(lambda: holds(env), 300, "the run reaches its blocking step")
        assert prefect_servers(home), "a Prefect server runs for this run"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    wait_until(lambda: prefect_servers(home) == [], 60, "no Prefect server outlives the killed run (idle 1 s)")


def test_a_server_nobody_recorded_stops(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server whose starter died before writing ``server.json`` (or whose record names another process) is
    nobody's: it stops at once instead of waiting to be idle."""
    from pitstop import prefect_server

    monkeypatch.setenv("PREFECT_HOME", str(home))
    monkeypatch.setenv("PITSTOP_PREFECT_IDLE", "3600")
    api = prefect_server.join(tmp_path / "state")
    try:
        assert api.started and alive(api.record.pid)
        rec = api.record
        prefect_server.write_record(api.directory, prefect_server.ServerRecord(
            pid=os.getpid(), port=rec.port, auth=rec.auth, started_at=rec.started_at))
        wait_until(lambda: not alive(rec.pid), 60, "the unrecorded server stops although a client holds it")
    finally:
        api.release()


@pytest.fixture
def four_envs(make_env: Any, pg_socket: str, tmp_path: Path) -> Iterator[list[Path]]:
    """Four environments, each with its own seeded database and state directory."""
    from pitstop.demo import SCHEMA, SEED

    names = [f"t_{uuid.uuid4().hex[:10]}" for _ in range(3)]
    for name in names:
        with psycopg.connect(host=pg_socket, dbname="postgres", user="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(host=pg_socket, dbname=name, user="postgres") as conn:
            conn.execute(SCHEMA)
            conn.execute(SEED)

    def mutate(i: int) -> Callable[[dict[str, Any]], None]:
        def edit(cfg: dict[str, Any]) -> None:
            cfg["name"] = f"env{i}"
            cfg["state_dir"] = str(tmp_path / f"state{i}")
            if i:
                cfg["database"]["dbname"] = names[i - 1]
        return edit

    yield [make_env(mutate(i), name=f"env{i}.yaml") for i in range(4)]
    for name in names:
        with psycopg.connect(host=pg_socket, dbname="postgres", user="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_eight_commands_starting_together_on_four_environments(four_envs: list[Path], tmp_path: Path,
                                                                home: Path) -> None:
    """All start (one Prefect home, empty: every server creates its database); the environment lock still
    admits one run per environment, the other is refused with exit 3."""
    rb = runbook(tmp_path, HOLD)
    env = cli_env(home, 2)
    procs = [(e, start(["run", "--env", str(e), "--runbook", str(rb), "--json"], env, tmp_path / f"out{i}.json"))
             for i, e in enumerate(four_envs * 2)]
    try:
        wait_until(lambda: all(holds(e) for e in four_envs) and sum(p.poll() is not None for _, p in procs) == 4,
                   600, "one run per environment holds it, the other command was refused")
    finally:
        for e in four_envs:
            (state_of(e) / "hosts" / "app-1" / "release").touch()
    codes: dict[Path, list[int]] = {e: [] for e in four_envs}
    for e, p in procs:
        err = p.communicate(timeout=600)[1]
        assert "Traceback" not in err and "OperationalError" not in err, err[-3000:]
        assert p.returncode in (0, 3), (p.returncode, err[-3000:])
        if p.returncode == 3:
            assert "holds" in err or "another run" in err, err[-2000:]
        codes[e].append(p.returncode)
    assert all(sorted(c) == [0, 3] for c in codes.values()), codes
    wait_until(lambda: prefect_servers(home) == [], 60, "the four idle servers stop")


def test_migrations_are_skipped_only_for_the_database_that_was_migrated(tmp_path: Path) -> None:
    """A server skips Prefect's migration check (1-2 s) only if ``migrated.json`` names the installed Prefect and
    the revision the database file is at now: a replaced, emptied or older database is migrated again."""
    import sqlite3

    from pitstop.prefect_server import migrated, prefect_version, server_env

    d = tmp_path / "prefect"
    d.mkdir(mode=0o700)
    assert not migrated(d)
    with sqlite3.connect(d / "prefect.db") as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.execute("INSERT INTO alembic_version VALUES ('rev2')")
    conn.close()
    assert not migrated(d)  # no note yet
    (d / "migrated.json").write_text(json.dumps({"prefect": prefect_version(), "revision": "rev2"}))
    assert migrated(d)
    with pytest.MonkeyPatch.context() as mp:
        for k in list(os.environ):
            if k.startswith("PREFECT_API_DATABASE"):
                mp.delenv(k)
        assert server_env(d, "x" * 32, 3)["PREFECT_API_DATABASE_MIGRATE_ON_START"] == "false"
        mp.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg://elsewhere/prefect")
        assert "PREFECT_API_DATABASE_MIGRATE_ON_START" not in server_env(d, "x" * 32, 3)  # not our database
    (d / "migrated.json").write_text(json.dumps({"prefect": "0.0.1", "revision": "rev2"}))
    assert not migrated(d)  # another Prefect: its migrations may differ
    (d / "migrated.json").write_text(json.dumps({"prefect": prefect_version(), "revision": "rev1"}))
    assert not migrated(d)  # the database is not at the noted revision (replaced or restored)
    (d / "prefect.db").unlink()
    assert not migrated(d)


def test_a_bad_idle_setting_is_bad_input(make_env: Any, tmp_path: Path, home: Path) -> None:
    env = make_env()
    res = run_cli("run", "--env", str(env), "--runbook", str(runbook(tmp_path, CHECK_ONLY)),
                  env={**cli_env(home, 0), "PITSTOP_PREFECT_IDLE": "soon"})
    assert res.returncode == 2, res.stderr
    assert "PITSTOP_PREFECT_IDLE" in res.stderr and "nothing was executed" in res.stderr
    assert not (state_of(env) / "runs").exists() and prefect_servers(home) == []


def test_a_server_started_for_a_bad_runbook_does_not_wait_to_be_idle(make_env: Any, tmp_path: Path,
                                                                     home: Path) -> None:
    """The server starts once the config is valid, while the runbook loads; a runbook found invalid then
    ends the command (exit 2, nothing run) and the server it started with it, idle timeout or not."""
    env = make_env()
    bad = runbook(tmp_path, {**CHECK_ONLY, "stages": [{"name": "preflight", "steps": [{"uses": "no.such_step"}]}]})
    res = run_cli("run", "--env", str(env), "--runbook", str(bad), env=cli_env(home, 3600))
    assert res.returncode == 2 and "unknown step 'no.such_step'" in res.stderr, res.stderr
    assert not (state_of(env) / "runs").exists()
    wait_until(lambda: prefect_servers(home) == [], 60, "the server started for the refused command stops")


def test_an_approval_on_the_local_server_is_given_with_pitstop_approve(make_env: Any, tmp_path: Path,
                                                                       home: Path) -> None:
    """A run through the local server waits on the approval file, as it did on Prefect's ephemeral API:
    `pitstop approve` from another shell (no PREFECT_API_URL) decides it."""
    from tests.approval.helpers import approval_runbook, wait_for_request

    env = make_env()
    proc = start(["run", "--env", str(env), "--runbook", str(approval_runbook(tmp_path)), "--json"],
                 cli_env(home, 2), tmp_path / "out.json")
    run_dir = wait_for_request(state_of(env) / "runs")
    assert json.loads((run_dir / "approval-request.json").read_text())["mechanism"] == "cli"
    ok = run_cli("approve", run_dir.name, "--env", str(env), "--comment", "ok", env=cli_env(home, 2))
    assert ok.returncode == 0, ok.stderr
    err = proc.communicate(timeout=600)[1]
    assert proc.returncode == 0, err[-3000:]
    assert json.loads((run_dir / "report.json").read_text())["approval"]["status"] == "approved"
