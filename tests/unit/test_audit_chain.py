"""The audit log's hash chain detects edits, deletions and reorders."""

from __future__ import annotations

import json
import random
from pathlib import Path

from pitstop.audit import AuditLog, verify_chain


def make_log(tmp_path: Path, n: int = 12) -> Path:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(n):
        log.emit("step.finished", step=f"s{i}", value=i)
    return log.path


def test_intact_chain_verifies(tmp_path: Path) -> None:
    assert verify_chain(make_log(tmp_path)) is None


def test_resume_continues_chain(tmp_path: Path) -> None:
    path = make_log(tmp_path, 3)
    AuditLog(path).emit("run.resumed")
    assert verify_chain(path) is None
    assert json.loads(path.read_text().splitlines()[-1])["seq"] == 4


def test_random_single_byte_edits_detected(tmp_path: Path) -> None:
    path = make_log(tmp_path)
    original = path.read_bytes()
    rng = random.Random(7)
    for _ in range(25):
        data = bytearray(original)
        while True:
            i = rng.randrange(len(data))
            if data[i] != ord("\n"):
                break
        data[i] = (data[i] + rng.randrange(1, 255)) % 256 or 1
        if data[i] == ord("\n"):
            data[i] = ord("x")
        path.write_bytes(bytes(data))
        assert verify_chain(path) is not None, f"edit at byte {i} not detected"


def test_deleted_and_reordered_lines_detected(tmp_path: Path) -> None:
    path = make_log(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:4] + lines[5:]))
    assert "line 5" in (verify_chain(path) or "")
    swapped = lines[:]
    swapped[2], swapped[3] = swapped[3], swapped[2]
    path.write_text("".join(swapped))
    assert verify_chain(path) is not None


def test_secrets_redacted_before_writing(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl", redact=lambda s: s.replace("hunter2-canary", "***"))
    log.emit("step.finished", error="auth failed for password hunter2-canary")
    assert "hunter2-canary" not in (tmp_path / "a.jsonl").read_text()
