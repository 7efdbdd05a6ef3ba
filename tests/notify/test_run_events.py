"""Run events through the real engine (embedded PostgreSQL, local hosts): audiences, emergency
notices and follow-up, window.extended, the status feed, and the lead-time policy of scheduled runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pitstop import runner
from pitstop.config import load_config
from pitstop.notify.notices import check_lead_time, send_due

from ..conftest import run_cli


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_emergency_run_notifies_all_emergency_audiences_and_follows_up(make_env: Any) -> None:
    env = make_env()
    res = runner.execute(str(env), "monthly", trigger="emergency", reason="disk full on db-1")
    cfg = load_config(str(env))
    customers = lines(cfg.resolve("customers.jsonl"))
    events = [m["event"] for m in customers]
    assert events[0] == "emergency.started" and events[-1] == "emergency.ended"
    first = customers[0]
    assert first["audience"] == "customers" and "Expected downtime" in first["body"]
    assert "disk full on db-1" not in first["body"]  # the operator's reason (a host name) stays internal
    assert "Emergency maintenance of Demo Shop has started" == first["subject"]
    ops = lines(cfg.resolve("notifications.jsonl"))
    assert "disk full on db-1" in ops[0]["body"]
    assert ops[0]["event"] == "emergency.started"
    assert {"stage.completed", "emergency.ended"} <= {m["event"] for m in ops}
    assert ops[0]["audience"] == "ops"  # ops-log serves ops and oncall: one copy, for the first audience
    report = res.report()
    notes = report["notifications"]
    assert {(n["event"], n["channel"], n["status"]) for n in notes} >= {
        ("emergency.started", "customers-mail", "sent"), ("emergency.ended", "customers-mail", "sent")}
    audit = [json.loads(x) for x in (res.run_dir / "audit.jsonl").read_text().splitlines()]
    assert any(e["kind"] == "notice.lead_time" and e["data"]["status"] == "exempt" for e in audit)
    feed = json.loads(cfg.resolve("status/status.json").read_text())
    assert feed["in_progress"] == []
    assert feed["completed"][0]["run_id"] == res.run_id and feed["completed"][0]["trigger"] == "emergency"
    assert "Demo Shop" in cfg.resolve("status/status.html").read_text()


def test_overrun_sends_window_extended_once(make_env: Any) -> None:
    def tight(doc: dict[str, Any]) -> None:
        doc["notifications"]["notices"].update(history_min_runs=1, overrun_grace="0s")

    env = make_env(tight)
    cfg = load_config(str(env))
    # one earlier run whose window lasted 1 ms: history says p90 = 0.001 s
    past = cfg.resolve(cfg.reports.dir) / "20260101T000000Z-test-monthly-000000"
    past.mkdir(parents=True)
    (past / "report.json").write_text(json.dumps({"environment": "test", "runbook": "monthly",
                                                  "started_at": "2026-01-01T00:00:00+00:00",
                                                  "maintenance_window": {"duration_s": 0.001}}))
    res = runner.execute(str(env), "monthly")
    ext = [m for m in lines(cfg.resolve("customers.jsonl")) if m["event"] == "window.extended"]
    assert len(ext) == 1 and "taking longer than expected" in ext[0]["subject"]
    audit = [json.loads(x) for x in (res.run_dir / "audit.jsonl").read_text().splitlines()]
    assert sum(e["kind"] == "window.extended" for e in audit) == 1


def test_scheduled_run_without_notice_is_refused(make_env: Any) -> None:
    env = make_env(lambda d: d["notifications"]["notices"].update(policy="refuse"))
    r = run_cli("run", "--env", str(env), "--runbook", "monthly", "--trigger", "scheduled", "--engine", "local",
                "--json")
    assert r.returncode != 0
    assert "scheduled run refused" in r.stderr and "no scheduled window" in r.stderr
    cfg = load_config(str(env))
    assert not list(cfg.resolve(cfg.reports.dir).glob("*/report.json"))


def test_scheduled_run_with_warn_policy_records_the_warning(make_env: Any) -> None:
    env = make_env()  # demo policy: warn
    res = runner.execute(str(env), "monthly", trigger="scheduled")
    audit = [json.loads(x) for x in (res.run_dir / "audit.jsonl").read_text().splitlines()]
    lt = [e["data"] for e in audit if e["kind"] == "notice.lead_time"]
    assert lt and lt[0]["status"] == "warning" and lt[0]["ok"] is False
    assert res.report()["status"] == "succeeded"


def test_lead_time_needs_the_48h_notice_delivered_48h_ahead(notices_env: Any, tmp_path: Path) -> None:
    channels = {"customers-mail": {"kind": "file", "path": "customers.jsonl", "audiences": ["customers"]}}
    start = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)
    run_at = start + timedelta(minutes=1)
    for hours_ahead, ok in ((30, False), (47, True)):
        cfg = notices_env(channels, lambda d, h=hours_ahead: d.update(state_dir=str(tmp_path / f"s{h}")))
        t = start - timedelta(hours=hours_ahead)
        assert [r.status for r in send_due(cfg, t, clock=lambda t=t: t)] == ["sent"]
        res = check_lead_time(cfg, "monthly", run_at)
        assert res.ok is ok and res.window_id == "monthly@20261206T010000Z"


def test_customers_emergency_notices_carry_no_internal_detail(make_env: Any, tmp_path: Path) -> None:
    """Step names, error text and hosts reach the ops audiences, never the customers'."""
    import json as _json

    import yaml as _yaml

    from tests.conftest import run_cli

    env = make_env()
    rb = tmp_path / "broken.yaml"
    rb.write_text(_yaml.safe_dump({"name": "broken", "kind": "emergency", "stages": [
        {"name": "server-tuning", "steps": [
            {"uses": "host.command", "destructive": False, "name": "restart-app-xyz", "targets": "app",
             "with": {"argv": ["sh", "-c", "echo kaboom-internal >&2; exit 4"]}}]}]}))
    res = run_cli("emergency", "--env", str(env), "--runbook", str(rb), "--reason", "disk full",
                  "--engine", "local")
    assert res.returncode == 1, res.stdout + res.stderr
    state = tmp_path / "state"
    customers = [_json.loads(x) for x in (state / "customers.jsonl").read_text().splitlines()]
    ops = (state / "notifications.jsonl").read_text()
    assert customers, "the customers heard nothing"
    text = _json.dumps(customers)
    for internal in ("restart-app-xyz", "kaboom-internal", "app-1", "exit 4", "server-tuning"):
        assert internal not in text, internal
    assert "restart-app-xyz" in ops  # the ops audience keeps the detail


def test_an_emergency_without_a_maintenance_step_announces_no_downtime(make_env: Any, tmp_path: Path) -> None:
    import json as _json

    import yaml as _yaml

    from tests.conftest import report_of, run_cli

    env = make_env()
    rb = tmp_path / "restart.yaml"
    rb.write_text(_yaml.safe_dump({"name": "restart", "kind": "emergency", "expected_downtime": "0m", "stages": [
        {"name": "server-tuning", "steps": [{"uses": "host.command", "destructive": False, "targets": "app",
                                             "with": {"argv": ["true"]}}]}]}))
    res = run_cli("emergency", "--env", str(env), "--runbook", str(rb), "--reason", "stuck worker",
                  "--engine", "local", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    report = report_of(res.stdout)
    assert report["expected_downtime_s"] == 0
    mails = [_json.loads(x) for x in (tmp_path / "state" / "customers.jsonl").read_text().splitlines()]
    started = [m for m in mails if m["event"] == "emergency.started"]
    assert started and "No downtime is expected" in started[0]["body"]
    assert "sign-in" not in started[0]["body"] and "1 min" not in started[0]["body"]


def test_a_rehearsal_mutes_customers_and_is_labelled_everywhere(make_env: Any, tmp_path: Path) -> None:
    import json as _json

    from tests.conftest import report_of, run_cli

    env = make_env()
    res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--rehearsal", "--engine", "local", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    report = report_of(res.stdout)
    assert report["rehearsal"] is True
    customers = tmp_path / "state" / "customers.jsonl"
    assert not customers.exists() or customers.read_text().strip() == ""
    ops = [_json.loads(x) for x in (tmp_path / "state" / "notifications.jsonl").read_text().splitlines()]
    assert ops and all(m["subject"].startswith("[REHEARSAL]") for m in ops)
    run_dir = Path(_json.loads(res.stdout)["run_dir"])
    assert "REHEARSAL" in (run_dir / "report.md").read_text() and "REHEARSAL" in (run_dir / "report.html").read_text()
    listing = run_cli("report", "list", "--env", str(env))
    assert "rehearsal" in listing.stdout
