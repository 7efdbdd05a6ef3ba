"""Checks inside real runs: a failing preflight aborts before maintenance mode; a failing
post-verification marks the run failed_verification, alerts on-call and the report names every
difference."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import yaml

from tests.conftest import ROOT, report_of, run_cli


def _runbook(tmp_path: Path, preflight: list[dict] | None = None, post: list[dict] | None = None) -> Path:
    rb = yaml.safe_load((ROOT / "runbooks" / "monthly.yaml").read_text())
    for stage in rb["stages"]:
        if stage["name"] == "preflight" and preflight:
            stage["steps"] += preflight
        if stage["name"] == "post-verification" and post:
            stage["steps"] += post
    path = tmp_path / "rb.yaml"
    path.write_text(yaml.safe_dump(rb, sort_keys=False))
    return path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flag(env_path: Path, host: str) -> Path:
    return env_path.parent / "state" / "hosts" / host / "var" / "www" / "maintenance.flag"


def test_failing_preflight_aborts_before_maintenance_mode(make_env, tmp_path):
    env_path = make_env()
    rb = _runbook(tmp_path, preflight=[{"uses": "check.tcp", "name": "payment gateway reachable",
                                        "with": {"host": "127.0.0.1", "port": _closed_port(), "timeout_s": 2}}])
    proc = run_cli("run", "--env", str(env_path), "--runbook", str(rb), "--engine", "local", "--json")
    assert proc.returncode == 1, proc.stderr
    r = report_of(proc.stdout)
    assert r["status"] == "failed" and r["failure"]["stage"] == "preflight"
    assert r["maintenance_window"]["started_at"] is None
    steps = {st["uses"]: st["status"] for s in r["stages"] for st in s["steps"]}
    assert steps["maintenance.on"] == "skipped" and steps["backup.postgres"] == "skipped"
    assert steps["cleanup.retention"] == "skipped"
    audit = Path(json.loads(proc.stdout)["run_dir"]) / "audit.jsonl"
    events = [json.loads(line)["kind"] for line in audit.read_text().splitlines()]
    assert "window.opened" not in events and "cleanup.purged" not in events
    assert not _flag(env_path, "web-1").exists() and not _flag(env_path, "web-2").exists()
    tcp = next(c for c in r["checks"] if c["name"] == "tcp")
    assert tcp["status"] == "fail" and tcp["evidence"]["error"]


def test_failed_post_verification_alerts_and_names_every_difference(make_env, tmp_path):
    env_path = make_env()
    rb = _runbook(tmp_path, post=[
        {"uses": "check.sql_assert", "name": "user count as expected", "destructive": False,
         "with": {"sql": "SELECT count(*) FROM users", "expect_scalar": 999}},
        {"uses": "check.service_active", "name": "worker running", "targets": "app",
         "with": {"argv": ["sh", "-c", "exit 3"]}},
    ])
    proc = run_cli("run", "--env", str(env_path), "--runbook", str(rb), "--engine", "local", "--json")
    assert proc.returncode == 1, proc.stderr
    r = report_of(proc.stdout)
    assert r["status"] == "failed_verification"
    failed = {c["name"]: c for c in r["verification"]["failed"]}
    assert set(failed) == {"sql_assert", "service_active"}  # both checks ran: every difference is listed
    assert failed["sql_assert"]["observed"] == 200 and failed["service_active"]["host"] == "app-1"
    # data parity still passed, and the other checks ran after the first failure
    assert next(c for c in r["checks"] if c["name"] == "data_parity")["status"] == "pass"
    # on-call alerted with severity failure, naming what differed
    notes = [json.loads(line) for line in (env_path.parent / "state" / "notifications.jsonl").read_text().splitlines()]
    alert = next(n for n in notes if n["event"] == "run.failed")
    assert alert["severity"] == "failure" and "failed_verification" in alert["subject"]
    assert "observed 200" in alert["body"] and "999" in alert["body"]
    assert "check service_active on app-1 failed" in alert["body"]
    run_dir = Path(json.loads(proc.stdout)["run_dir"])
    html = (run_dir / "report.html").read_text()
    assert 'id="failure"' in html and "Verification sql_assert" in html and "Verification service_active" in html
    md = (run_dir / "report.md").read_text()
    assert "## Failure" in md and "Verification **sql_assert**" in md
    assert any("Resolve failed verification sql_assert" in f for f in r["follow_ups"])
