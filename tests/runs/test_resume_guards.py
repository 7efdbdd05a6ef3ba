"""What `pitstop resume` refuses, and what it must bring back.

* a run that finished — succeeded, or failed and finished (its report written and sealed, everyone told
  how it ended): exit 2, saying so and where its report is; nothing appended to its log, nothing re-sent;
* a crashed run whose audit log was edited without rehashing (a failed verification turned "succeeded"):
  exit 2, and the purge the forgery would have unlocked never runs;
* every option of the first attempt (``--expected-downtime`` was lost) comes back from the log, typed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, run_cli
from tests.operator.helpers import WAIT_FOR_RELEASE, release, wait_for_event
from tests.reliability.results import record


def _runbook(path: Path, stages: list[dict[str, Any]], kind: str = "monthly") -> Path:
    path.write_text(yaml.safe_dump({"name": path.stem, "kind": kind, "stages": stages}, sort_keys=False))
    return path


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pitstop.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "COLUMNS": "200"})


def _kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


def _snapshot(state: Path) -> dict[str, bytes]:
    """Every file of the state dir except the embedded database: run folders, storage, notification sinks."""
    return {str(p.relative_to(state)): p.read_bytes() for p in sorted(state.rglob("*"))
            if p.is_file() and "pgdata" not in p.parts}


def _refused_without_a_trace(env: Path, run_id: str, state: Path) -> str:
    before = _snapshot(state)
    again = run_cli("resume", run_id, "--env", str(env), "--engine", "local")
    assert again.returncode == 2, again.stdout + again.stderr
    assert "Traceback" not in again.stderr
    assert _snapshot(state) == before, "a refused resume must append, write and send nothing"
    return " ".join(again.stderr.split())


def test_a_succeeded_run_is_not_resumed(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    flat = _refused_without_a_trace(env, info["run_id"], tmp_path / "state")
    assert "already finished (succeeded" in flat and str(Path(info["run_dir"]) / "report.html") in flat


def test_a_failed_and_finished_run_is_not_resumed(make_env: Any, tmp_path: Path) -> None:
    """The run failed, lifted maintenance, told everyone it failed and sealed its report: resuming it would
    rewrite that record and tell customers it completed. Refused, pointing at the report and a new run."""
    env = make_env()
    rb = _runbook(tmp_path / "fails.yaml", [{"name": "server-tuning", "steps": [
        {"uses": "host.command", "destructive": False, "targets": "app", "with": {"argv": ["false"]}}]}],
        kind="custom")
    res = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    assert res.returncode == 1, res.stderr
    info = json.loads(res.stdout)
    flat = _refused_without_a_trace(env, info["run_id"], tmp_path / "state")
    assert "already finished (failed" in flat and str(Path(info["run_dir"]) / "report.html") in flat
    assert "pitstop run --env" in flat


def test_a_tampered_audit_log_is_not_trusted_by_resume(make_env: Any, tmp_path: Path, db_conn: Any,
                                                       seeded_db: str) -> None:
    """A crashed run whose restore-verify failed; someone flips that event to "succeeded" without rehashing.
    Trusted, the resumed run would purge under a backup that is known to be bad."""
    env = make_env()
    state = tmp_path / "state"
    rb = _runbook(tmp_path / "gated.yaml", [
        {"name": "pre-backup", "steps": [
            {"uses": "backup.postgres"},
            {"uses": "host.command", "destructive": False,
             "name": "damage the stored dump", "targets": "app", "window": "outside",
             "with": {"argv": ["sh", "-c", f"for f in {state}/storage/backups/*/*/*.dump; do "
                                           "truncate -s 64 \"$f\"; done"]}},
            {"uses": "backup.verify", "continue_on_error": True},
            {"uses": "host.command", "destructive": False, "name": "wait for release", "targets": "app",
             "window": "outside", "with": {"argv": WAIT_FOR_RELEASE}}]},
        {"name": "database-cleanup", "steps": [{"uses": "cleanup.retention"}]}])
    proc = _start("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    run_dir = wait_for_event(state / "runs", "step.started", "wait for release")
    _kill(proc)
    log = run_dir / "audit.jsonl"
    lines = log.read_text().splitlines()
    forged = []
    for line in lines:
        ev = json.loads(line)
        if ev["kind"] == "step.finished" and ev["data"].get("uses") == "backup.verify":
            assert ev["data"]["status"] == "failed"
            ev["data"]["status"] = "succeeded"  # the edit, without rehashing the chain
            ev["data"]["data"] = {"verification": {"rows": 1, "tables": 1}}
            line = json.dumps(ev, sort_keys=True)
        forged.append(line)
    assert forged != lines, "the verify step's event was not found"
    log.write_text("\n".join(forged) + "\n")
    release(env)
    with db_conn(seeded_db) as conn:
        before = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    flat = _refused_without_a_trace(env, run_dir.name, state)
    with db_conn(seeded_db) as conn:
        after = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    record("tampered_log_resume", forged_inputs=1, trusted=int(after != before))
    assert "not intact" in flat
    assert after == before
