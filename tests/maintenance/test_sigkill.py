"""The dead-man's switch end to end: a real `pitstop run` process (local engine) turns maintenance
on, blocks inside the window, is killed with SIGKILL; every host leaves maintenance by itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from .helpers import root_of, wait_for, write_env, write_runbook

ROOT = Path(__file__).resolve().parents[2]
FLAG = "var/www/maintenance.flag"


def test_sigkill_in_maintenance_is_lifted_by_the_ttl(tmp_path: Path, pg_data_dir: Path) -> None:
    env = write_env(tmp_path, maintenance={"deadman": {"ttl": "3s"}}, pg_data_dir=pg_data_dir)
    rb = write_runbook(tmp_path, [
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on"}]},
        {"name": "server-tuning", "steps": [
            {"uses": "host.command", "destructive": False, "name": "long work", "targets": "web-1",
             "with": {"argv": ["sleep", "60"], "timeout_s": 120}}]},
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off"}]},
    ])
    proc = subprocess.Popen([sys.executable, "-m", "pitstop.cli", "run", "--env", str(env), "--runbook", str(rb),
                             "--engine", "local", "--json"], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PITSTOP_STATE_DIR": str(tmp_path / "state")})
    flags = [root_of(env, h) / FLAG for h in ("web-1", "web-2")]
    try:
        wait_for(lambda: all(f.exists() for f in flags) or proc.poll() is not None, deadline_s=60,
                 what="maintenance on")
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        run_ids = {json.loads(f.read_text())["run_id"] for f in flags}
        assert len(run_ids) == 1
        # Wait until the run is inside the blocking step, then kill the whole run (pitstop + its sleep).
        wait_for(lambda: _running_sleep(proc.pid), deadline_s=30, what="the blocking step")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert all(f.exists() for f in flags), "the kill happened inside the window"
    wait_for(lambda: not any(f.exists() for f in flags), deadline_s=60, what="the TTL to lift maintenance")
    audit = next((tmp_path / "state" / "runs").glob("*/audit.jsonl")).read_text()
    assert "window.closed" not in audit  # pitstop itself never got to lift it


def _running_sleep(session: int) -> bool:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.getsid(int(d.name)) == session and (d / "cmdline").read_bytes().startswith(b"sleep\0"):
                    return True
            except (ProcessLookupError, FileNotFoundError, PermissionError):
                continue
    return False
