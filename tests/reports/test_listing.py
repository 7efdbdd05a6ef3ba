"""Ids an operator copies are never cut: `report list` and `backups list` at 80 columns and piped."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize("columns", ["80", "140"])
def test_listings_never_cut_ids(make_env: Any, columns: str) -> None:
    env = make_env()
    res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr
    run_id = json.loads(res.stdout)["run_id"]
    for args in (["report", "list"], ["backups", "list"]):
        out = run_cli(*args, "--env", str(env), env={"COLUMNS": columns})
        assert out.returncode == 0, out.stderr
        assert run_id in out.stdout, out.stdout
        assert "…" not in out.stdout, out.stdout


def test_the_report_says_who_started_the_run_where_and_with_which_files(make_env: Any) -> None:
    import getpass
    import hashlib
    import socket
    from pathlib import Path

    from tests.conftest import report_of

    env = make_env()
    res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr
    report = report_of(res.stdout)
    pv = report["provenance"]
    assert pv["user"] == getpass.getuser() and pv["host"] == socket.gethostname() and pv["pitstop_version"]
    assert pv["config"]["sha256"] == hashlib.sha256(Path(env).read_bytes()).hexdigest()
    assert pv["runbook"]["path"].endswith("runbooks/monthly.yaml")
    run_dir = Path(json.loads(res.stdout)["run_dir"])
    for name in ("report.md", "report.html"):
        text = (run_dir / name).read_text()
        assert pv["config"]["sha256"] in text and pv["host"] in text


def test_auditor_details_gate_override_lead_time_and_notification_stages(make_env: Any, tmp_path: Any) -> None:
    from pathlib import Path

    import yaml

    from tests.conftest import report_of

    env = make_env()
    rb = Path(tmp_path) / "gated.yaml"
    rb.write_text(yaml.safe_dump({"name": "gated", "kind": "monthly", "stages": [
        {"name": "pre-backup", "steps": [{"uses": "backup.postgres"}]},
        {"name": "database-cleanup", "steps": [{"uses": "cleanup.retention"}]}]}))
    res = run_cli("run", "--env", str(env), "--runbook", str(rb), "--accept-unverified-backup", "--reason",
                  "verify server down", "--trigger", "scheduled", "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr
    report = report_of(res.stdout)
    (over,) = [d for d in report["deviations"] if d["kind"] == "gate.overridden"]
    assert over["by"] and over["backup"] == "taken, not verified" and over["backup_created_at"] < over["at"]
    assert any(d["kind"] == "notice.lead_time" for d in report["deviations"])  # "users were not told"
    stages = [n for n in report["notifications"] if n["event"] == "stage.completed"]
    assert stages and all(n["stage"] and n["recipients"] for n in stages)
