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
from dataclasses import fields
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitstop.audit import read_events
from pitstop.context import RunOptions
from pitstop.model import Trigger
from tests.conftest import ROOT, run_cli
from tests.operator.helpers import WAIT_FOR_RELEASE, release, state_dir, wait_for_event
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


def test_resume_restores_every_option_of_the_first_attempt(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    rb = _runbook(tmp_path / "stuck.yaml", [{"name": "server-tuning", "steps": [
        {"uses": "host.command", "destructive": False, "name": "wait for release", "targets": "app",
         "with": {"argv": WAIT_FOR_RELEASE}}]}], kind="custom")
    proc = _start("emergency", "--env", str(env), "--runbook", str(rb), "--reason", "disk at 97%",
                  "--expected-downtime", "17m", "--engine", "local", "--json")
    run_dir = wait_for_event(state_dir(env) / "runs", "step.started", "wait for release")
    _kill(proc)
    release(env)
    again = run_cli("resume", run_dir.name, "--env", str(env), "--engine", "local", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    events = read_events(run_dir / "audit.jsonl")
    first = next(e["data"] for e in events if e["kind"] == "run.started")
    (resumed,) = [e["data"] for e in events if e["kind"] == "run.resumed"]
    assert RunOptions.from_record(resumed) == RunOptions.from_record(first) == RunOptions(
        trigger=Trigger.EMERGENCY, reason="disk at 97%", expected_downtime=timedelta(minutes=17))
    assert resumed["options"]["expected_downtime_s"] == 17 * 60 and resumed["expected_downtime_s"] == 17 * 60
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "succeeded" and report["expected_downtime_s"] == 17 * 60


# a value away from the default for each annotation RunOptions uses; a field of a new type fails below
NON_DEFAULT: dict[str, Any] = {"Trigger": Trigger.EMERGENCY, "str": "why: a value", "bool": True,
                               "timedelta | None": timedelta(minutes=17, seconds=3)}


@pytest.mark.parametrize("name", [f.name for f in fields(RunOptions)])
def test_every_run_option_survives_the_first_event(name: str) -> None:
    """Each field of RunOptions, set away from its default, comes back from the record the first event
    carries (through JSON, as the audit log stores it): an option added later cannot be lost by resume."""
    f = next(f for f in fields(RunOptions) if f.name == name)
    assert str(f.type) in NON_DEFAULT, f"{name}: add a test value for {f.type}"
    opts = RunOptions(**{name: NON_DEFAULT[str(f.type)]})
    assert opts != RunOptions(), f"{name}: the test value is the default"
    record_ = json.loads(json.dumps({"options": opts.to_record()}))
    assert RunOptions.from_record(record_) == opts


def test_a_malformed_options_record_is_refused_not_guessed(make_env: Any, tmp_path: Path) -> None:
    from pitstop.audit import AuditLog
    from pitstop.config import load_config
    from pitstop.context import Redactor
    from pitstop.errors import InputError
    from pitstop.runner import resumable

    env = make_env()
    cfg = load_config(str(env))
    run_dir = cfg.resolve(cfg.reports.dir) / "20260101T000000Z-test-monthly-abcdef"
    run_dir.mkdir(parents=True)
    AuditLog(run_dir / "audit.jsonl", Redactor([])).emit(  # a well-chained log whose options are nonsense
        "run.started", run_id=run_dir.name, environment=cfg.name, runbook="monthly", trigger="manual",
        options={"trigger": "whenever", "dry_run": "maybe"})
    with pytest.raises(InputError, match="options in its first event are not valid"):
        resumable(cfg, run_dir.name)


def test_a_finished_run_killed_before_its_seal_gets_its_report_once(make_env: Any, tmp_path: Path) -> None:
    """Killed between ``run.finished`` and the manifest: resume writes the report and nothing else (no step,
    no notification); the run is then finished and sealed — a second resume is refused, and it is never
    taken for an abandoned run."""
    from pitstop.abandoned import inspect

    env = make_env()
    state = tmp_path / "state"
    res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr
    run_dir = Path(json.loads(res.stdout)["run_dir"])
    lines = (run_dir / "audit.jsonl").read_text().splitlines()
    cut = next(i for i, x in enumerate(lines) if json.loads(x)["kind"] == "run.finished") + 1
    (run_dir / "audit.jsonl").write_text("\n".join(lines[:cut]) + "\n")
    for name in ("report.json", "report.md", "report.html", "manifest.json"):
        (run_dir / name).unlink()
    sent = {p.name: p.read_bytes() for p in state.glob("*.jsonl")}
    again = run_cli("resume", run_dir.name, "--env", str(env), "--engine", "local", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads((run_dir / "report.json").read_text())["status"] == "succeeded"
    kinds = [e["kind"] for e in read_events(run_dir / "audit.jsonl")]
    assert kinds[cut:].count("run.resumed") == 1 and "step.started" not in kinds[cut:]
    assert {p.name: p.read_bytes() for p in state.glob("*.jsonl")} == sent, "nothing may be sent again"
    assert inspect(run_dir, yaml.safe_load(env.read_text())["name"]) is None
    flat = _refused_without_a_trace(env, run_dir.name, state)
    assert "already finished (succeeded" in flat
