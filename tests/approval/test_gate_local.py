"""The approval gate on the local engine, through the CLI: approve, reject, timeout, the wait point in the plan,
validation of `approval:`, and the maintenance flag never present while the run waits."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.approval.helpers import ME, approval_runbook, events, flags, wait_for_request
from tests.conftest import ROOT, report_of, run_cli
from tests.operator.helpers import state_dir
from tests.runs.test_lock_and_resume import start


def _rows(socket: str, db: str) -> int:
    with psycopg.connect(host=socket, dbname=db, user="postgres") as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def test_plan_shows_where_the_run_waits(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    rb = approval_runbook(tmp_path)
    proc = run_cli("plan", "--env", str(env), "--runbook", str(rb), "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    point = plan["approval"]
    ids = [s["id"] for s in plan["steps"]]
    waits_before = plan["steps"][ids.index(point["step"])]
    assert point["approvers"] == [ME] and point["timeout_s"] == 300 and point["source"] == "runbook"
    # never later than the window's first step, and nothing of maintenance-on or a later stage before it
    before = plan["steps"][:ids.index(point["step"])]
    assert all(s["phase"] == "before" and s["stage"] in ("preflight", "pre-backup") for s in before)
    assert waits_before["stage"] in ("maintenance-on", "database-cleanup", "server-tuning")
    text = run_cli("plan", "--env", str(env), "--runbook", str(rb))
    assert text.returncode == 0, text.stderr
    assert f"approval: the run waits before {waits_before['label']!r}" in text.stdout
    assert "wait for approval" in text.stdout


@pytest.mark.parametrize(("approval", "where", "expected"), [
    ({"before": "maintenance-off"}, "approval.before", "not a stage a run can wait before"),
    ({"before": "post-verification"}, "approval.before", "never inside it or after it"),
    ({"before": "tuning"}, "approval.before", "not a stage a run can wait before"),
    ({"approvers": []}, "approval", "at least one name in `approvers`"),
    ({"approvers": ["bob; rm -rf"]}, "approval.approvers", "expected a user name"),
    ({"timeout": "soon"}, "approval.timeout", ""),
    ({"on_timeout": "approve"}, "approval.on_timeout", "abort"),
    ({"audience": "nobody"}, "approval.audience", "unknown audience 'nobody'"),
    ({"skip": True, "reason": "fast"}, "approval.skip", "only an emergency runbook may skip approval"),
    ({"skip": True}, "approval", "needs a `reason`"),
])
def test_invalid_approval_is_refused_with_file_and_line(make_env: Any, tmp_path: Path, approval: dict[str, Any],
                                                       where: str, expected: str) -> None:
    env = make_env()
    rb = approval_runbook(tmp_path, **approval)
    proc = run_cli("validate", "--env", str(env), "--runbook", str(rb))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    flat = " ".join(proc.stderr.split())  # the console wraps long lines
    assert re.search(rf"{re.escape(str(rb))}:\d+ at {re.escape(where)}: .*{re.escape(expected)}", flat), flat
    assert "Traceback" not in proc.stderr


def test_before_a_stage_the_runbook_lacks_is_refused(make_env: Any, tmp_path: Path) -> None:
    rb = yaml.safe_load((ROOT / "runbooks" / "monthly.yaml").read_text())
    rb["stages"] = [s for s in rb["stages"] if s["name"] != "server-tuning"]
    rb["approval"] = {"before": "server-tuning", "approvers": [ME]}
    path = tmp_path / "rb.yaml"
    path.write_text(yaml.safe_dump(rb, sort_keys=False))
    proc = run_cli("run", "--env", str(make_env()), "--runbook", str(path), "--engine", "local")
    assert proc.returncode == 2
    assert "at approval.before: stage 'server-tuning' is not in this runbook" in " ".join(proc.stderr.split())


def test_environment_approval_cannot_skip(make_env: Any) -> None:
    env = make_env()
    cfg = yaml.safe_load(env.read_text())
    env.write_text(yaml.safe_dump({**cfg, "approval": {"skip": True, "reason": "no"}}, sort_keys=False))
    proc = run_cli("validate", "--env", str(env))
    assert proc.returncode == 2
    flat = " ".join(proc.stderr.split())
    assert f"{env}:" in flat and "at approval.skip: only an emergency runbook may skip" in flat, flat


def test_approved_run_waits_outside_the_window_then_completes(make_env: Any, tmp_path: Path, pg_socket: str,
                                                              seeded_db: str) -> None:
    env = make_env()
    rb = approval_runbook(tmp_path)
    before_rows = _rows(pg_socket, seeded_db)
    proc = start("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    run_dir = wait_for_request(state_dir(env) / "runs")
    kinds = [e["kind"] for e in events(run_dir)]
    assert "backup.verified" in kinds  # pre-backup ran before the wait point
    assert "window.opened" not in kinds and "maintenance.on" not in kinds and "cleanup.purged" not in kinds
    assert flags(state_dir(env)) == []  # the site is not in maintenance mode while the run waits
    assert _rows(pg_socket, seeded_db) == before_rows
    request = json.loads((run_dir / "approval-request.json").read_text())
    assert (run_dir / "approval-request.json").stat().st_mode & 0o077 == 0
    assert request["approvers"] == [ME] and request["mechanism"] == "cli"
    assert any("purge expired rows" in w for w in request["what"])  # the request says what will happen
    assert any("rows" in w for w in request["what"])

    ok = run_cli("approve", run_dir.name, "--env", str(env), "--comment", "change CHG-1 approved", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["approver"] == ME
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    report = report_of(out)
    assert report["status"] == "succeeded"
    a = report["approval"]
    assert a["status"] == "approved" and a["approver"] == ME and a["comment"] == "change CHG-1 approved"
    assert a["via"] == "cli" and a["decided_at"]
    decided = [e for e in events(run_dir) if e["kind"] == "approval.decided"]
    assert decided and decided[0]["data"]["approver"] == ME
    kinds = [e["kind"] for e in events(run_dir)]
    assert kinds.index("approval.decided") < kinds.index("window.opened")
    assert _rows(pg_socket, seeded_db) < before_rows  # the cleanup ran once approved
    html = (run_dir / "report.html").read_text()
    assert "change CHG-1 approved" in html and ME in html
    # a decision for a run that no longer waits is refused
    late = run_cli("reject", run_dir.name, "--env", str(env), "--comment", "too late")
    assert late.returncode == 2 and "is not waiting for approval" in late.stderr, late.stderr


def test_rejected_run_ends_not_approved_and_changes_nothing(make_env: Any, tmp_path: Path, pg_socket: str,
                                                            seeded_db: str) -> None:
    env = make_env()
    rb = approval_runbook(tmp_path)
    before_rows = _rows(pg_socket, seeded_db)
    proc = start("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    run_dir = wait_for_request(state_dir(env) / "runs")
    nobody = run_cli("approve", run_dir.name, "--env", str(env), "--comment", " ")
    assert nobody.returncode == 2 and "--comment must say why" in nobody.stderr
    no = run_cli("reject", run_dir.name, "--env", str(env), "--comment", "not during the sale")
    assert no.returncode == 0, no.stderr
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 4, err
    report = report_of(out)
    assert report["status"] == "not-approved"
    assert report["approval"]["status"] == "rejected" and report["approval"]["comment"] == "not during the sale"
    assert report["failure"]["error"] == f"rejected by {ME}: not during the sale"
    kinds = [e["kind"] for e in events(run_dir)]
    assert "window.opened" not in kinds and "maintenance.on" not in kinds and "cleanup.purged" not in kinds
    assert flags(state_dir(env)) == []
    assert _rows(pg_socket, seeded_db) == before_rows
    steps = {st["name"]: st["status"] for s in report["stages"] for st in s["steps"]}
    assert steps["purge expired rows"] == "skipped" and steps["maintenance page on"] == "skipped"
    assert (run_dir / "manifest.json").is_file()
    listed = run_cli("report", "list", "--env", str(env), "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["status"] for r in json.loads(listed.stdout) if r["run_id"] == run_dir.name] == ["not-approved"]
    html = (run_dir / "report.html").read_text()
    assert "not-approved" in html and "not during the sale" in html
    # the approvers' audience (ops) was told what would happen; customers only that it was called off
    ops = [json.loads(x) for x in (state_dir(env) / "notifications.jsonl").read_text().splitlines()]
    requested = [m for m in ops if m["event"] == "approval.requested"]
    assert requested and "purge expired rows" in requested[0]["body"] and "rows" in requested[0]["body"]
    assert any(m["event"] == "approval.rejected" for m in ops)
    customers = [json.loads(x) for x in (state_dir(env) / "customers.jsonl").read_text().splitlines()]
    assert not any(m["event"].startswith("approval.") for m in customers)
    [called_off] = [m for m in customers if m["event"] == "run.cancelled"]
    assert "called off" in called_off["subject"] and "purge" not in called_off["body"]
    assert run_dir.name not in json.dumps(called_off)


def test_no_decision_in_time_aborts(make_env: Any, tmp_path: Path, pg_socket: str, seeded_db: str) -> None:
    env = make_env()
    rb = approval_runbook(tmp_path, timeout="2s")
    before_rows = _rows(pg_socket, seeded_db)
    proc = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    assert proc.returncode == 4, proc.stderr
    report = report_of(proc.stdout)
    assert report["status"] == "not-approved" and report["approval"]["status"] == "timed out"
    assert "no decision within 2s" in report["failure"]["error"]
    run_dir = Path(json.loads(proc.stdout)["run_dir"])
    kinds = [e["kind"] for e in events(run_dir)]
    assert "approval.timed_out" in kinds and "window.opened" not in kinds
    assert flags(state_dir(env)) == [] and _rows(pg_socket, seeded_db) == before_rows


def test_only_a_listed_approver_decides(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    rb = approval_runbook(tmp_path, approvers=["alice-ops"], timeout="3m")
    proc = start("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    run_dir = wait_for_request(state_dir(env) / "runs")
    try:
        denied = run_cli("approve", run_dir.name, "--env", str(env), "--comment", "me")
        assert denied.returncode == 2, denied.stderr
        assert f"{ME!r} is not an approver of run {run_dir.name} (approvers: alice-ops)" in denied.stderr
        # a decision file forged by hand for an approver who is not a user here is recorded and ignored
        request = json.loads((run_dir / "approval-request.json").read_text())
        forged = {"run_id": run_dir.name, "request_id": request["request_id"], "approver": "alice-ops",
                  "decision": "approve", "comment": "forged", "via": "cli", "decided_at": "2026-01-01T00:00:00+00:00"}
        (run_dir / "approval-decision.json").write_text(json.dumps(forged))
        deadline = __import__("time").monotonic() + 30
        while not any(e["kind"] == "approval.invalid" for e in events(run_dir)):
            assert __import__("time").monotonic() < deadline, "forged decision not noticed"
            __import__("time").sleep(0.2)
        invalid = next(e for e in events(run_dir) if e["kind"] == "approval.invalid")
        assert "not a user on this machine" in invalid["data"]["error"]
        assert "window.opened" not in [e["kind"] for e in events(run_dir)]
        assert proc.poll() is None  # still waiting
    finally:
        proc.terminate()
        proc.communicate(timeout=120)


def test_emergency_runbook_skips_approval_and_says_so(make_env: Any, tmp_path: Path) -> None:
    env = make_env(lambda c: c.update(approval={"approvers": [ME], "timeout": "2s"}))
    rb = approval_runbook(tmp_path, name="urgent", base="emergency-disk", skip=True, reason="disk full, no time")
    proc = run_cli("emergency", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--reason", "disk",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    report = report_of(proc.stdout)
    assert report["approval"]["status"] == "skipped" and report["approval"]["reason"] == "disk full, no time"
    assert any(d["kind"] == "approval.skipped" for d in report["deviations"])
    # the environment's approval applies to a runbook that says nothing: it waits (and times out here)
    plain = run_cli("emergency", "--env", str(env), "--runbook", "emergency-disk", "--engine", "local",
                    "--reason", "disk", "--json")
    assert plain.returncode == 4, plain.stderr
    assert report_of(plain.stdout)["approval"]["source"] == "environment"


def test_resumed_run_is_not_asked_again(make_env: Any, tmp_path: Path) -> None:
    """Approved, then killed inside its window: `pitstop resume` finishes it without a second approval."""
    import signal

    from tests.operator.helpers import WAIT_FOR_RELEASE, wait_for_event

    rb = yaml.safe_load((ROOT / "runbooks" / "monthly.yaml").read_text())
    tuning = next(s for s in rb["stages"] if s["name"] == "server-tuning")
    tuning["steps"].append({"uses": "host.command", "destructive": False, "name": "wait for release", "targets": "app",
                            "with": {"argv": WAIT_FOR_RELEASE}})
    rb["approval"] = {"before": "maintenance-on", "approvers": [ME], "timeout": "5m"}
    path = tmp_path / "blocking.yaml"
    path.write_text(yaml.safe_dump(rb, sort_keys=False))
    env = make_env()
    proc = start("run", "--env", str(env), "--runbook", str(path), "--engine", "local", "--json")
    run_dir = wait_for_request(state_dir(env) / "runs")
    assert run_cli("approve", run_dir.name, "--env", str(env), "--comment", "ok").returncode == 0
    wait_for_event(state_dir(env) / "runs", "step.started", "wait for release")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    (state_dir(env) / "hosts" / "app-1" / "release").touch()
    resumed = run_cli("resume", run_dir.name, "--env", str(env), "--engine", "local", "--json")
    assert resumed.returncode == 0, resumed.stderr
    report = report_of(resumed.stdout)
    assert report["status"] == "succeeded" and report["approval"]["approver"] == ME
    kinds = [e["kind"] for e in events(run_dir)]
    assert kinds.count("approval.requested") == 1 and "approval.already_given" in kinds
