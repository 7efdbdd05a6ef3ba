"""A run interrupted inside its window (Ctrl-C, SIGINT, a stray SystemExit) says what it interrupted.

The issue's report read ``Failure: Stage: None, Step: None, Error: 1`` and showed maintenance-off as
"skipped" while the safety net had switched every host off. The interrupted step is recorded as failed by
the interruption, the failure names it, and the maintenance-off step the safety net did is recorded as done.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pitstop.report.verify import verify_run_dir
from tests.conftest import ROOT
from tests.operator.helpers import blocking_runbook, release, state_dir, wait_for_event

# a local-engine run; the suite's session Prefect server (PREFECT_API_URL in this process once a test used it)
# has nothing to do with it
LOCAL = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}


def foreground() -> None:
    """What a shell does for a foreground job: Ctrl-C's signal at its default, not blocked. A child inherits
    an ignored or blocked SIGINT (Python then installs no KeyboardInterrupt handler): in the full suite
    something before these tests left the pytest process so, and the run never saw the interruption."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_an_interrupted_window_names_the_step_and_the_safety_net(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    rb = blocking_runbook(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "pitstop.cli", "run", "--env", str(env), "--runbook", str(rb),
                             "--engine", "local", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, start_new_session=True, env=LOCAL,
                            preexec_fn=foreground)
    try:
        run_dir = wait_for_event(state_dir(env) / "runs", "step.started", "wait for release")
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground job, its commands too
        _, err = proc.communicate(timeout=120)
    finally:
        release(env)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "failed"
    failure = report["failure"]
    assert (failure["stage"], failure["step"]) == ("server-tuning", "wait for release"), failure
    # whichever the run saw first: its own interruption, or the step's command stopped by the same Ctrl-C
    assert failure["error"].startswith("interrupted: KeyboardInterrupt") or "exited -2" in failure["error"], failure
    steps = {st["name"]: st for s in report["stages"] for st in s["steps"]}
    assert steps["wait for release"]["status"] == "failed"
    off = [st for s in report["stages"] if s["name"] == "maintenance-off" for st in s["steps"]]
    assert off and all(st["status"] == "succeeded" and "safety net" in st["summary"] for st in off), off
    assert not (state_dir(env) / "hosts" / "web-1" / "var/www/maintenance.flag").exists()
    assert verify_run_dir(run_dir) is None


def test_an_interruption_names_the_step_it_interrupted(make_env: Any, tmp_path: Path) -> None:
    """Only pitstop is interrupted (the step's own command goes on to its end): the step in progress is
    recorded as failed by the interruption and the failure names it — not ``Stage: None, Step: None``."""
    import yaml

    env = make_env()
    rb = tmp_path / "interrupted.yaml"
    rb.write_text(yaml.safe_dump({"name": "interrupted", "kind": "custom", "stages": [
        {"name": "server-tuning", "steps": [
            {"uses": "host.command", "destructive": False, "name": "interrupt pitstop", "targets": "app",
             "window": "outside", "with": {"argv": ["sh", "-c", "kill -INT $PPID; sleep 1"]}}]}]}))
    proc = subprocess.run([sys.executable, "-m", "pitstop.cli", "run", "--env", str(env), "--runbook", str(rb),
                           "--engine", "local", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=LOCAL, preexec_fn=foreground)
    assert proc.returncode == 130, proc.stderr[-3000:]
    (run_dir,) = (state_dir(env) / "runs").iterdir()
    report = json.loads((run_dir / "report.json").read_text())
    failure = report["failure"]
    assert (failure["stage"], failure["step"]) == ("server-tuning", "interrupt pitstop"), failure
    assert failure["error"] == "interrupted: KeyboardInterrupt", failure
    (step,) = [st for s in report["stages"] for st in s["steps"] if st["name"] == "interrupt pitstop"]
    assert step["status"] == "failed" and step["error"] == "interrupted: KeyboardInterrupt"
    assert verify_run_dir(run_dir) is None
