"""The report of a real run: schema, content, built only from the audit log; the report CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pitstop.audit import read_events
from pitstop.report.builder import SCHEMA_VERSION, build_report
from pitstop.runbook import STAGE_ORDER
from tests.conftest import run_cli

TOP_LEVEL = {"schema_version", "run_id", "environment", "runbook", "trigger", "reason", "dry_run", "started_at",
             "finished_at", "duration_s", "status", "failure", "expected_downtime_s", "maintenance_window",
             "stages", "hosts", "plan", "backup", "cleanup", "metrics", "checks", "verification", "commands",
             "notifications", "deviations", "follow_ups", "post_maintenance", "audit"}


def _report(run: dict) -> dict:
    return json.loads((run["run_dir"] / "report.json").read_text())


def test_report_json_schema(monthly_run):
    r = _report(monthly_run)
    assert TOP_LEVEL <= set(r)  # every documented field; other sections may add more (e.g. in_window)
    assert r["schema_version"] == SCHEMA_VERSION
    assert r["status"] == "succeeded" and r["verification"]["status"] == "passed"
    w = r["maintenance_window"]
    assert w["downtime_announced_s"] == 300.0 and 0 < w["downtime_actual_s"] < 300 and w["overrun_s"] == 0
    assert [s["name"] for s in r["stages"]][:2] == ["preflight", "pre-backup"]
    assert all(st["started_at"] and st["finished_at"] for s in r["stages"] for st in s["steps"])
    assert r["backup"]["verified"] and r["backup"]["verification"]["rows"] > 0
    assert r["cleanup"]["rows_purged"] == sum(r["cleanup"]["tables"].values()) > 0
    assert {"web-1", "web-2", "app-1"} <= set(r["hosts"])
    assert all(c["exit_code"] == 0 and c["argv"] for c in r["commands"])
    assert all(n["sent_at"] for n in r["notifications"])
    assert r["audit"]["events"] == len(read_events(monthly_run["run_dir"] / "audit.jsonl"))


def test_checks_carry_evidence_and_data_parity_numbers(monthly_run):
    r = _report(monthly_run)
    parity = next(c for c in r["checks"] if c["name"] == "data_parity")
    assert parity["status"] == "pass" and parity["stage"] == "post-verification"
    sessions = parity["evidence"]["tables"]["public.sessions"]
    assert sessions["before"] - sessions["purged"] == sessions["after"]
    assert sessions["purged"] == r["cleanup"]["tables"]["public.sessions"]
    assert all(c["evidence"] is not None and c["step"] for c in r["checks"])
    tables = {m["table"]: m for m in r["metrics"]["table_rows"]}
    assert tables["public.sessions"]["rows_before"] - sessions["purged"] == tables["public.sessions"]["rows_after"]
    assert {d["host"] for d in r["metrics"]["disk_rows"]} == {"web-1", "web-2", "app-1"}


def test_report_is_exactly_what_the_audit_log_says(monthly_run):
    run_dir = monthly_run["run_dir"]
    rebuilt = build_report(read_events(run_dir / "audit.jsonl"), [s.value for s in STAGE_ORDER])
    assert json.loads(json.dumps(rebuilt, default=str)) == _report(monthly_run)


def test_markdown_sections(monthly_run):
    md = (monthly_run["run_dir"] / "report.md").read_text()
    for heading in ("# Maintenance report", "## Stages", "## Checks", "### Data parity", "## Before / after",
                    "## Backup", "## Database cleanup", "## Commands run", "## Notifications",
                    "## Deviations and follow-ups"):
        assert heading in md, heading


def test_emergency_run_has_post_maintenance_section(emergency_run):
    r = _report(emergency_run)
    pm = r["post_maintenance"]
    assert r["trigger"] == "emergency" and pm["cause"] == "disk on db-1 filling up after a runaway log"
    assert pm["steps_taken"] and pm["outcome"] and pm["follow_ups"]
    html = (emergency_run["run_dir"] / "report.html").read_text()
    assert "Post-maintenance report (emergency)" in html and "runaway log" in html
    assert "Post-maintenance report (emergency)" in (emergency_run["run_dir"] / "report.md").read_text()


def test_report_cli_list_show_verify(monthly_run, secret_env, tmp_path):
    env_path, env = secret_env
    listed = json.loads(run_cli("report", "list", "--env", str(env_path), "--json", env=env).stdout)
    assert monthly_run["run_id"] in [row["run_id"] for row in listed]
    shown = run_cli("report", "show", monthly_run["run_id"], "--env", str(env_path), "--json", env=env)
    assert json.loads(shown.stdout)["run_id"] == monthly_run["run_id"]
    md = run_cli("report", "show", str(monthly_run["run_dir"]))
    assert md.returncode == 0 and "Maintenance report" in md.stdout
    ok = run_cli("report", "verify", f"file://{monthly_run['run_dir']}", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    # The storage copy verifies too: move the local folder away and verify by run id.
    moved = tmp_path / "moved"
    shutil.move(str(monthly_run["run_dir"]), moved)
    try:
        remote = run_cli("report", "verify", monthly_run["run_id"], "--env", str(env_path), "--json", env=env)
        assert remote.returncode == 0, remote.stdout + remote.stderr
    finally:
        shutil.move(str(moved), monthly_run["run_dir"])


def test_bad_run_name_is_input_error():
    proc = run_cli("report", "verify", "/nonexistent/run")
    assert proc.returncode == 2 and "no run folder" in proc.stderr
    assert Path("/nonexistent/run").exists() is False
