"""One run per environment (advisory lock) and resuming a killed run without repeating work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, report_of, run_cli
from tests.operator.helpers import blocking_runbook, state_dir, wait_for_event


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pitstop.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "COLUMNS": "200"})


def test_ten_simultaneous_triggers_exactly_one_runs(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    rb = blocking_runbook(tmp_path)
    args = ("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    procs = [start(*args) for _ in range(10)]
    holder_dir = wait_for_event(state_dir(env) / "runs", "step.started", "wait for release")
    deadline = time.monotonic() + 120
    while sum(p.poll() is not None for p in procs) < 9 and time.monotonic() < deadline:
        time.sleep(0.1)  # the one holding the environment keeps waiting for its release file
    refused = [p for p in procs if p.poll() is not None]
    assert len(refused) == 9, [p.returncode for p in refused]
    for p in refused:
        assert p.returncode == 3, p.stderr.read()
        err = p.stderr.read()
        assert "is busy" in err and holder_dir.name in err, err
    (state_dir(env) / "hosts" / "app-1" / "release").touch()
    [runner] = [p for p in procs if p not in refused]
    out, err = runner.communicate(timeout=120)
    assert runner.returncode == 0, err
    assert report_of(out)["status"] == "succeeded"
    assert len(list((state_dir(env) / "runs").iterdir())) == 1, "refused triggers must not create runs"


def watchers(run_id: str) -> list[int]:
    """Live dead-man watcher processes (``setsid`` method) naming ``run_id``."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            args = (d / "cmdline").read_bytes().split(b"\0") if d.name.isdigit() else []
        except OSError:
            continue
        if b"pitstop-deadman" in args and run_id.encode() in args:
            found.append(int(d.name))
    return found


def test_resume_after_sigkill_skips_completed_steps(make_env: Any, seeded_db: str, db_conn: Any,
                                                    tmp_path: Path) -> None:
    env = make_env()
    rb = blocking_runbook(tmp_path)
    with db_conn(seeded_db) as conn:
        before = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    proc = start("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    run_dir = wait_for_event(state_dir(env) / "runs", "step.started", "wait for release")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # The crashed run left maintenance on (its dead-man's switch would lift it after the TTL).
    assert (state_dir(env) / "hosts" / "web-1" / "var/www/maintenance.flag").exists()
    assert watchers(run_dir.name), "the dead attempt's dead-man watchers should be waiting"

    (state_dir(env) / "hosts" / "app-1" / "release").touch()
    res = run_cli("resume", run_dir.name, "--env", str(env), "--engine", "local", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    report = report_of(res.stdout)
    assert report["status"] == "succeeded" and report["run_id"] == run_dir.name
    events = [json.loads(x) for x in (run_dir / "audit.jsonl").read_text().splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds.count("run.started") == 1 and kinds.count("run.resumed") == 1
    assert kinds.count("backup.created") == 1, "the backup must not be taken twice"
    purged = [e["data"]["table"] for e in events if e["kind"] == "cleanup.purged"]
    assert sorted(purged) == ["public.events", "public.sessions"], "the purge must not run twice"
    skipped = {e["data"]["step"] for e in events if e["kind"] == "step.already_done"}
    assert {"pg_dump to storage", "restore-verify the dump", "purge expired rows", "maintenance page on"} <= skipped
    assert report["backup"]["verified"] is True  # rebuilt from the log: the gate and checks still see it
    assert not (state_dir(env) / "hosts" / "web-1" / "var/www/maintenance.flag").exists()
    # The resumed run cancelled the dead attempt's watchers (same run id: left alone, they would fire on
    # the old TTL, possibly in the middle of the resumed run).
    assert not watchers(run_dir.name)
    offs = [e["data"] for e in events if e["kind"] == "maintenance.off"]
    assert offs and all(o["deadman_cancelled"] for o in offs), offs
    with db_conn(seeded_db) as conn:
        assert before - conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1500
    dumps = list((state_dir(env) / "storage").rglob("*.dump"))
    assert len(dumps) == 1
    assert run_cli("report", "verify", str(run_dir)).returncode == 0


def test_the_reported_window_is_the_flags_real_lifetime_across_attempts(make_env: Any, tmp_path: Path) -> None:
    """SIGKILL inside the window, resume later: the site showed the maintenance page all along, so the report's
    window runs from maintenance on (first attempt) to maintenance off (resumed attempt), gap included."""
    import threading

    env = make_env()
    rb = blocking_runbook(tmp_path)
    flag = state_dir(env) / "hosts" / "web-1" / "var/www/maintenance.flag"
    seen: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            if flag.exists():
                seen.append(time.time())
            time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        proc = start("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
        run_dir = wait_for_event(state_dir(env) / "runs", "step.started", "wait for release")
        time.sleep(1.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(2.5)  # nobody runs, the page is still up
        (state_dir(env) / "hosts" / "app-1" / "release").touch()
        res = run_cli("resume", run_dir.name, "--env", str(env), "--engine", "local", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        stop.set()
        poller.join()
    w = report_of(res.stdout)["maintenance_window"]
    real = seen[-1] - seen[0]
    assert real > 4, real
    assert abs(w["duration_s"] - real) < 1.0, (w, real)
    assert len(w["attempts"]) == 2 and w["attempts"][1]["gap_before_s"] > 2
