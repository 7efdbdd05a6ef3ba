"""pitstop's progress lines for the flow run's log: read off the (redacted) audit log, one line per event that
matters, never a secret."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pitstop.audit import AuditLog
from pitstop.prefect_adapter.progress import FlowRunLog, line
from pitstop.redact import Redactor

SECRET = "s3cr3t-Token-0123456789"


def test_progress_lines_carry_no_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl", Redactor([SECRET]))
    logger = logging.getLogger("pitstop.test.flow_run_log")
    audit.subscribe(FlowRunLog(logger))
    with caplog.at_level(logging.INFO, logger=logger.name):
        audit.emit("step.started", stage="server-tuning", step="reload", uses="host.command", hosts=["app-1"])
        audit.emit("step.finished", stage="server-tuning", step="reload", uses="host.command", status="failed",
                   error=f"curl https://user:{SECRET}@hooks.example/x exited 7",
                   hosts=[{"host": "app-1", "status": "failed"}])
        audit.emit("approval.decided", decision="reject", approver="alice", via="cli", comment=f"token {SECRET}")
        audit.emit("notification", channel="ops-log")  # not a progress line
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "step started: server-tuning / reload (host.command) on app-1"
    assert messages[1].startswith("step FAILED: server-tuning / reload: curl https://user:")
    assert "[app-1: failed]" in messages[1] and caplog.records[1].levelno == logging.ERROR
    assert messages[2].startswith("approval: reject by alice via cli: token ")
    assert len(messages) == 3
    assert not any(SECRET in m or SECRET[:10] in m for m in messages), messages


def test_every_gate_outcome_has_a_line() -> None:
    for kind in ("approval.requested", "approval.decided", "approval.timed_out", "approval.failed",
                 "approval.skipped", "approval.invalid"):
        assert line({"kind": kind, "data": {"approvers": ["a"], "before": "x"}}) is not None, kind
