"""A real Prefect server backed by PostgreSQL and a process worker on loopback: deploy the
environment, trigger emergency runs through the API, SIGKILL the worker mid-run and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tests.conftest import ROOT, prefect_server_on_postgres, report_of, run_cli
from tests.operator.helpers import blocking_runbook, state_dir, wait_for_event

PREFECT = str(Path(sys.executable).with_name("prefect"))


PG15 = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="module")
def system_pg() -> Iterator[str]:
    """Debian's PostgreSQL 15 (it has the pg_trgm extension Prefect's server needs; pgserver lacks it),
    as a throw-away cluster on a unix socket, run as the `postgres` system user."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="pitstop-prefect-pg-"))
    base.chmod(0o755)
    shutil.chown(base, "postgres", "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_pg, str(PG15 / "initdb"), "-D", str(base / "data"), "--auth=trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run([*as_pg, str(PG15 / "pg_ctl"), "-D", str(base / "data"), "-w", "-l", str(base / "log"),
                    "-o", f"-k {base} -c listen_addresses=''", "start"], check=True, capture_output=True)
    yield str(base)
    subprocess.run([*as_pg, str(PG15 / "pg_ctl"), "-D", str(base / "data"), "-w", "-m", "fast", "stop"],
                   capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def prefect_server(system_pg: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``prefect server start`` on PostgreSQL (Debian's 15), UI off."""
    with prefect_server_on_postgres(system_pg, tmp_path_factory.mktemp("prefect-home")) as info:
        yield info


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    parent = psutil.Process(proc.pid)
    procs = [parent, *parent.children(recursive=True)]
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)


def test_deploy_emergency_kill_worker_resume(prefect_server: dict[str, str], make_env: Any, seeded_db: str,
                                             db_conn: Any, tmp_path: Path) -> None:
    env = make_env()
    rb = blocking_runbook(tmp_path)
    pool = f"pool-{uuid.uuid4().hex[:6]}"

    deployed = run_cli("deploy", "--env", str(env), "--work-pool", pool, "--json", env=prefect_server)
    assert deployed.returncode == 0, deployed.stderr
    names = {d["deployment"] for d in json.loads(deployed.stdout)}
    assert {"pitstop-maintenance/test-monthly", "pitstop-maintenance/test-quarterly",
            "pitstop-maintenance/test-emergency", "pitstop-notices/test-notices"} <= names

    worker_log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", pool, "--type", "process"], cwd=ROOT,
                              env={**os.environ, **prefect_server}, stdout=worker_log, stderr=subprocess.STDOUT)
    try:
        started = run_cli("emergency", "--env", str(env), "--runbook", str(rb), "--reason", "disk filling up",
                          "--no-wait", env=prefect_server)
        assert started.returncode == 0, started.stderr
        info = json.loads(started.stdout)
        assert info["deployment"] == "pitstop-maintenance/test-emergency"
        run_dir = wait_for_event(state_dir(env) / "runs", "step.started", "wait for release", timeout=240)
        assert run_dir.name == info["run_id"]
    finally:
        _kill_tree(worker)  # SIGKILL the worker and the flow run it started, mid-run

    (state_dir(env) / "hosts" / "app-1" / "release").touch()
    resumed = run_cli("resume", info["run_id"], "--env", str(env), "--engine", "local", "--json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    report = report_of(resumed.stdout)
    assert report["status"] == "succeeded" and report["trigger"] == "emergency"
    assert report["reason"] == "disk filling up"
    events = [json.loads(x) for x in (run_dir / "audit.jsonl").read_text().splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds.count("backup.created") == 1 and kinds.count("run.resumed") == 1
    assert {e["data"]["step"] for e in events if e["kind"] == "step.already_done"} >= {
        "pg_dump to storage", "restore-verify the dump", "purge expired rows"}
    with db_conn(seeded_db) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 4500

    # A second emergency through the API, waited for: completes on a fresh worker with its report.
    worker2 = subprocess.Popen([PREFECT, "worker", "start", "--pool", pool, "--type", "process"], cwd=ROOT,
                               env={**os.environ, **prefect_server}, stdout=worker_log, stderr=subprocess.STDOUT)
    try:
        done = run_cli("emergency", "--env", str(env), "--runbook", "monthly", "--reason", "replay attack",
                       "--json", env=prefect_server, timeout=400)
    finally:
        _kill_tree(worker2)
    assert done.returncode == 0, done.stdout + done.stderr
    report2 = report_of(done.stdout)
    assert report2["status"] == "succeeded" and report2["trigger"] == "emergency"
    pv = report2["provenance"]  # who started it: the deployment's flow run, named in the report
    assert pv["prefect_flow_run"] and pv["prefect_deployment"] and "emergency" in pv["prefect_deployment"]
    run_dir2 = Path(json.loads(done.stdout)["run_dir"])
    first = json.loads((run_dir2 / "audit.jsonl").read_text().splitlines()[0])
    assert first["data"]["provenance"] == pv  # an emergency's first event is its exemption from advance notice
    assert pv["prefect_deployment"] in (run_dir2 / "report.md").read_text()
    html = (Path(json.loads(done.stdout)["run_dir"]) / "report.html").read_text()
    assert "replay attack" in html
    _ = yaml  # config written by make_env
