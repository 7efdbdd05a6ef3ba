"""The approval gate on the Prefect engine against a real Prefect server: the flow run pauses with a typed
input form, is resumed through Prefect's API with input exactly as the UI form does (approve), through
`pitstop reject` (reject), or not at all (timeout); named after environment, runbook and trigger; pitstop's
progress in the flow run's logs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.approval.helpers import ME, approval_runbook, events, flags, wait_for_request
from tests.conftest import ROOT, report_of, run_cli
from tests.operator.helpers import state_dir


def start_prefect(env: Path, rb: Path, server: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pitstop.cli", "run", "--env", str(env), "--runbook", str(rb),
                             "--engine", "prefect", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env={**os.environ, "COLUMNS": "200", **server})


def flow_run(api: str, fid: str) -> dict[str, Any]:
    r = httpx.get(f"{api}/flow_runs/{fid}", timeout=10)
    r.raise_for_status()
    return dict(r.json())


def wait_paused(api: str, fid: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fr = flow_run(api, fid)
        if fr["state"]["type"] == "PAUSED":
            return fr
        time.sleep(0.3)
    raise AssertionError(f"flow run {fid} not paused: {fr['state']}")


def logs(api: str, fid: str) -> list[str]:
    r = httpx.post(f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [fid]}}, "limit": 200,
                                               "sort": "TIMESTAMP_ASC"}, timeout=10)
    r.raise_for_status()
    return [x["message"] for x in r.json()]


def paused_input(api: str, fid: str, request: dict[str, Any], part: str) -> Any:
    r = httpx.get(f"{api}/flow_runs/{fid}/input/paused-approval-{request['request_id']}-{part}", timeout=10)
    r.raise_for_status()
    return r.json()


def test_paused_flow_run_resumed_with_the_forms_input(prefect_ui_server: dict[str, str], make_env: Any,
                                                      tmp_path: Path) -> None:
    api = prefect_ui_server["PREFECT_API_URL"]
    env = make_env()
    rb = approval_runbook(tmp_path, approvers=[ME, "second-approver"])
    proc = start_prefect(env, rb, prefect_ui_server)
    try:
        run_dir = wait_for_request(state_dir(env) / "runs", timeout=300)
        request = json.loads((run_dir / "approval-request.json").read_text())
        assert request["mechanism"] == "prefect"
        fr = wait_paused(api, request["flow_run_id"])
        assert re.fullmatch(r"test-approved-manual-\d{8}T\d{4}Z", fr["name"]), fr["name"]
        assert flags(state_dir(env)) == []  # paused before the window: no maintenance flag anywhere
        schema = paused_input(api, fr["id"], request, "schema")
        assert schema["properties"]["approver"]["enum"] == [ME, "second-approver"]
        assert set(schema["required"]) >= {"approver", "decision", "comment"}
        description = paused_input(api, fr["id"], request, "description")
        assert "purge expired rows" in description and "does not authenticate" in description

        # someone not listed: the server refuses the input against the form's schema; the run keeps waiting
        bad = httpx.post(f"{api}/flow_runs/{fr['id']}/resume", timeout=10,
                         json={"run_input": {"approver": "mallory", "decision": "approve", "comment": "x"}})
        assert bad.json().get("status") != "ACCEPT", bad.text
        assert flow_run(api, fr["id"])["state"]["type"] == "PAUSED"
        # what the UI form sends when submitted
        ok = httpx.post(f"{api}/flow_runs/{fr['id']}/resume", timeout=10,
                        json={"run_input": {"approver": "second-approver", "decision": "approve",
                                            "comment": "CAB approved in the UI"}})
        assert ok.status_code in (200, 201) and ok.json()["status"] == "ACCEPT", ok.text
        out, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    report = report_of(out)
    a = report["approval"]
    assert report["status"] == "succeeded"
    assert (a["status"], a["approver"], a["via"], a["comment"]) == ("approved", "second-approver", "prefect",
                                                                    "CAB approved in the UI")
    assert a["authenticated"] is False
    assert flow_run(api, fr["id"])["state"]["type"] == "COMPLETED"
    lines = logs(api, fr["id"])
    for expected in ("step started: pre-backup / pg_dump to storage (backup.postgres)",
                     "step finished: pre-backup / restore-verify the dump",
                     "waiting for approval before 'purge expired rows'",
                     "approval: approve by second-approver via prefect: CAB approved in the UI",
                     "check data_parity", "rows purged from public.events: 1500", "maintenance window opened",
                     "run succeeded"):
        assert any(expected in x for x in lines), (expected, lines)
    kinds = [e["kind"] for e in events(run_dir)]
    assert kinds.index("approval.decided") < kinds.index("window.opened")


def test_reject_through_the_cli_resumes_the_flow_run(prefect_ui_server: dict[str, str], make_env: Any,
                                                     tmp_path: Path) -> None:
    api = prefect_ui_server["PREFECT_API_URL"]
    env = make_env()
    rb = approval_runbook(tmp_path)
    proc = start_prefect(env, rb, prefect_ui_server)
    try:
        run_dir = wait_for_request(state_dir(env) / "runs", timeout=300)
        fid = json.loads((run_dir / "approval-request.json").read_text())["flow_run_id"]
        wait_paused(api, fid)
        no = run_cli("reject", run_dir.name, "--env", str(env), "--comment", "freeze week", "--json",
                     env=prefect_ui_server)
        assert no.returncode == 0, no.stderr
        assert json.loads(no.stdout)["via"] == "prefect"
        out, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 4, err[-3000:]
    report = report_of(out)
    assert report["status"] == "not-approved" and report["approval"]["status"] == "rejected"
    assert report["approval"]["approver"] == ME and report["approval"]["comment"] == "freeze week"
    kinds = [e["kind"] for e in events(run_dir)]
    assert "window.opened" not in kinds and "cleanup.purged" not in kinds and "maintenance.on" not in kinds
    assert flow_run(api, fid)["state"]["type"] == "COMPLETED"
    again = run_cli("approve", run_dir.name, "--env", str(env), "--comment", "late", env=prefect_ui_server)
    assert again.returncode == 2 and "not waiting for approval" in again.stderr


def test_no_decision_in_time_aborts_the_flow_run_safely(prefect_ui_server: dict[str, str], make_env: Any,
                                                        tmp_path: Path) -> None:
    api = prefect_ui_server["PREFECT_API_URL"]
    env = make_env()
    rb = approval_runbook(tmp_path, timeout="3s")
    proc = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "prefect", "--json",
                   env=prefect_ui_server, timeout=400)
    assert proc.returncode == 4, proc.stderr[-3000:]
    report = report_of(proc.stdout)
    assert report["status"] == "not-approved" and report["approval"]["status"] == "timed out"
    run_dir = Path(json.loads(proc.stdout)["run_dir"])
    kinds = [e["kind"] for e in events(run_dir)]
    assert "approval.timed_out" in kinds and "window.opened" not in kinds and "approval.state_not_restored" not in kinds
    assert flags(state_dir(env)) == []
    fid = report["approval"]["flow_run_id"]
    assert flow_run(api, fid)["state"]["type"] == "COMPLETED"  # not left Paused
    assert any("approval.timed_out" in x for x in logs(api, fid))
