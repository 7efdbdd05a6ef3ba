"""The console is a viewer: a closed pipe or a full disk on stdout never changes a run.

``pitstop run ... | head -1`` once killed a run inside its maintenance window (rich raised SystemExit on
the broken pipe inside the Prefect flow run): maintenance was lifted by the safety net, the report
said "Error: 1" and customers got a run.failed email. Here the same pipelines run on both engines and
the run must succeed with a complete report, its own exit code, and no failure notification.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pitstop.report.verify import verify_run_dir
from tests.conftest import ROOT


def _only_run(state: Path) -> Path:
    runs = [p for p in (state / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.parametrize("sink", ["| head -1", "> /dev/full"])
@pytest.mark.parametrize("engine", ["local", "prefect"])
def test_a_closed_or_full_stdout_never_changes_the_run(make_env: Any, tmp_path: Path, engine: str, sink: str,
                                                       request: pytest.FixtureRequest) -> None:
    env_vars = {**os.environ, "COLUMNS": "80"}
    if engine == "prefect":
        env_vars["PREFECT_API_URL"] = request.getfixturevalue("prefect_api")
    env = make_env()
    rc_file = tmp_path / "rc"
    cmd = (f"{{ {sys.executable} -m pitstop.cli run --env {env} --runbook monthly --engine {engine}; "
           f"echo $? > {rc_file}; }} {sink}")
    proc = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, cwd=ROOT, env=env_vars, timeout=600)
    assert rc_file.read_text().strip() == "0", proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr[-3000:]
    run_dir = _only_run(tmp_path / "state")
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "succeeded" and report["failure"] is None
    off = [st for s in report["stages"] if s["name"] == "maintenance-off" for st in s["steps"]]
    assert off and all(st["status"] == "succeeded" for st in off)
    assert verify_run_dir(run_dir) is None
    sent = (tmp_path / "state" / "customers.jsonl").read_text()
    assert "run.failed" not in sent and "ended with problems" not in sent
