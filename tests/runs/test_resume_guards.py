"""What `pitstop resume` refuses, and what it must bring back.

* a run that already succeeded: exit 2, nothing appended to its sealed log, nothing re-sent;
* a run whose audit log was edited without rehashing (a failed verification turned "succeeded"):
  exit 2, and the purge the forgery would have unlocked never runs;
* every option of the first attempt (``--expected-downtime`` was lost) comes back from the log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pitstop.audit import read_events
from tests.conftest import run_cli
from tests.reliability.results import record


def _runbook(path: Path, stages: list[dict[str, Any]], kind: str = "monthly") -> Path:
    path.write_text(yaml.safe_dump({"name": path.stem, "kind": kind, "stages": stages}, sort_keys=False))
    return path


def test_a_succeeded_run_is_not_resumed(make_env: Any) -> None:
    env = make_env()
    res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    run_dir = Path(info["run_dir"])
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    again = run_cli("resume", info["run_id"], "--env", str(env), "--engine", "local")
    assert again.returncode == 2, again.stdout + again.stderr
    flat = " ".join(again.stderr.split())
    assert "already finished" in flat and "report.html" in flat and "Traceback" not in again.stderr
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_a_tampered_audit_log_is_not_trusted_by_resume(make_env: Any, tmp_path: Path, db_conn: Any,
                                                       seeded_db: str) -> None:
    env = make_env()
    state = tmp_path / "state"
    rb = _runbook(tmp_path / "gated.yaml", [
        {"name": "pre-backup", "steps": [
            {"uses": "backup.postgres"},
            {"uses": "host.command", "destructive": False,
             "name": "damage the stored dump", "targets": "app", "window": "outside",
             "with": {"argv": ["sh", "-c", f"for f in {state}/storage/backups/*/*/*.dump; do "
                                           "truncate -s 64 \"$f\"; done"]}},
            {"uses": "backup.verify"}]},
        {"name": "database-cleanup", "steps": [{"uses": "cleanup.retention"}]}])
    res = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    assert res.returncode == 1, res.stderr
    info = json.loads(res.stdout)
    log = Path(info["run_dir"]) / "audit.jsonl"
    lines = log.read_text().splitlines()
    forged = []
    for line in lines:
        ev = json.loads(line)
        if ev["kind"] == "step.finished" and ev["data"].get("uses") == "backup.verify":
            ev["data"]["status"] = "succeeded"  # the edit, without rehashing the chain
            ev["data"]["data"] = {"verification": {"rows": 1, "tables": 1}}
            line = json.dumps(ev, sort_keys=True)
        forged.append(line)
    assert forged != lines, "the verify step's event was not found"
    log.write_text("\n".join(forged) + "\n")
    with db_conn(seeded_db) as conn:
        before = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    again = run_cli("resume", info["run_id"], "--env", str(env), "--engine", "local")
    with db_conn(seeded_db) as conn:
        after = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    record("tampered_log_resume", forged_inputs=1, trusted=int(again.returncode != 2 or after != before))
    assert again.returncode == 2, again.stdout + again.stderr
    assert "not intact" in again.stderr and "Traceback" not in again.stderr
    assert after == before


def test_resume_restores_every_option_of_the_first_attempt(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    rb = _runbook(tmp_path / "flaky.yaml", [
        {"name": "server-tuning", "steps": [
            {"uses": "host.command", "destructive": False, "targets": "app",
             "with": {"argv": ["sh", "-c", f"test -e {tmp_path}/ok || {{ touch {tmp_path}/ok; exit 1; }}"]}}]}],
        kind="custom")
    res = run_cli("emergency", "--env", str(env), "--runbook", str(rb), "--reason", "disk at 97%",
                  "--expected-downtime", "17m", "--engine", "local", "--json")
    assert res.returncode == 1, res.stderr
    info = json.loads(res.stdout)
    again = run_cli("resume", info["run_id"], "--env", str(env), "--engine", "local", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    events = read_events(Path(info["run_dir"]) / "audit.jsonl")
    (resumed,) = [e["data"] for e in events if e["kind"] == "run.resumed"]
    assert resumed["options"]["expected_downtime_s"] == 17 * 60 and resumed["expected_downtime_s"] == 17 * 60
    assert resumed["options"]["trigger"] == "emergency" and resumed["options"]["reason"] == "disk at 97%"
