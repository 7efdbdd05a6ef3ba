"""Nothing lands in audit.jsonl once the report is being built from it (an interrupted step's host
command that ran on to its end used to append its event after the seal: an intact folder read TAMPERED)."""

from __future__ import annotations

from pathlib import Path

from pitstop.audit import AuditLog, read_events, verify_chain


def test_a_closed_log_keeps_late_events_out_of_the_file(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.emit("run.started", run="r")
    log.close()
    before = (tmp_path / "audit.jsonl").read_bytes()
    late = log.emit("command", argv=["sleep", "1"], exit_code=0)
    assert late.get("late") is True
    assert (tmp_path / "audit.jsonl").read_bytes() == before
    assert [kind for kind, _ in log.late] == ["command"]


def test_reopened_log_writes_the_late_events_in_the_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.emit("run.started", run="r")
    log.close()
    log.emit("command", exit_code=0)
    log.reopen()  # the report could not be written: nothing was sealed, the record goes on
    log.emit("report.failed", error="disk full")
    assert [e["kind"] for e in read_events(tmp_path / "audit.jsonl")] == ["run.started", "command", "report.failed"]
    assert verify_chain(tmp_path / "audit.jsonl") is None
