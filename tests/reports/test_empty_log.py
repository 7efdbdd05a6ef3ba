"""An empty ``audit.jsonl`` (a run stopped before its first event) is called empty, with what that means:
never "not valid JSON", never TAMPERED; ``report verify`` says the run never started, ``resume`` refuses
it (exit 2) saying there is nothing to resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pitstop.audit import verify_chain
from tests.conftest import run_cli

RUN = "20261204T050000Z-test-monthly-e0e0e0"


def test_verify_chain_says_an_empty_log_is_empty(tmp_path: Path) -> None:
    for content in (b"", b"\n", b"  \n\n"):
        log = tmp_path / "audit.jsonl"
        log.write_bytes(content)
        problem = verify_chain(log)
        assert problem is not None and "not valid JSON" not in problem
        assert problem.startswith("audit.jsonl is empty") and "never started" in problem


def test_report_verify_and_resume_of_a_run_that_never_started(make_env: Any) -> None:
    env = make_env()
    runs = Path(yaml.safe_load(env.read_text())["state_dir"]) / "runs"
    run_dir = runs / RUN
    run_dir.mkdir(parents=True)
    (run_dir / "audit.jsonl").write_bytes(b"")

    res = run_cli("report", "verify", str(run_dir))
    text = res.stdout + res.stderr
    assert res.returncode == 1 and "UNFINISHED" in text and "never started" in text, text
    assert "TAMPERED" not in text and "not valid JSON" not in text and "Traceback" not in text

    res = run_cli("resume", RUN, "--env", str(env), "--engine", "local")
    assert res.returncode == 2, res.stderr
    assert "never started" in res.stderr and "not intact" not in res.stderr and "Traceback" not in res.stderr
    assert (run_dir / "audit.jsonl").read_bytes() == b""  # refused: nothing appended
