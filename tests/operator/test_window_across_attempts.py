"""The maintenance window a resumed run reports is the one the site lived through, across attempts.

A run SIGKILLed inside its window and resumed later kept the maintenance page up all along: the resumed
attempt's window goes on from when maintenance went on, its ``window.closed`` says so, and the report's
window equals the flag file's observed lifetime. A run that died *after* lifting maintenance must not
stretch the window over the gap and the resumed attempt; and a resumed run keeps the window policy of the
run's start (a schedule's cutoff does not move because the run was resumed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from pitstop.runstate import EarlierAttempts
from pitstop.units import human_seconds
from tests.conftest import ROOT, report_of, run_cli
from tests.operator.helpers import WAIT_FOR_RELEASE, blocking_runbook, events, release, state_dir, wait_for_event


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pitstop.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "COLUMNS": "200"})


class FlagWatch:
    """Polls the maintenance flag of web-1: when it was first and last seen (wall clock)."""

    def __init__(self, env: Path):
        self.flag = state_dir(env) / "hosts" / "web-1" / "var/www/maintenance.flag"
        self.seen: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            if self.flag.exists():
                self.seen.append(time.time())
            time.sleep(0.02)

    def __enter__(self) -> FlagWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def lifetime(self) -> float:
        assert self.seen, "the flag was never seen"
        return self.seen[-1] - self.seen[0]


def test_killed_inside_the_window_the_resumed_window_goes_on(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    rb = blocking_runbook(tmp_path)
    with FlagWatch(env) as watch:
        proc = _start("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
        run_dir = wait_for_event(state_dir(env) / "runs", "step.started", "wait for release")
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        time.sleep(2.0)  # nobody runs: the page is still up
        release(env)
        res = run_cli("resume", run_dir.name, "--env", str(env), "--engine", "local")  # what the operator sees
        assert res.returncode == 0, res.stdout + res.stderr
    real = watch.lifetime
    assert real > 3, real
    shown = " ".join(res.stdout.split())
    assert f"resuming run {run_dir.name}" in shown, shown
    evs = events(run_dir)
    first_open = next(e for e in evs if e["kind"] == "window.opened")
    (resumed_open,) = [e["data"] for e in evs if e["kind"] == "window.opened" and e["data"].get("down_since")]
    assert resumed_open["down_since"] == first_open["ts"]
    assert f"maintenance on since {first_open['ts']}" in shown, shown
    (closed,) = [e["data"] for e in evs if e["kind"] == "window.closed"]
    assert abs(closed["duration_s"] - real) < 1.0, (closed, real)
    assert f"window closed after {human_seconds(closed['duration_s'])}" in shown, shown
    assert closed["attempt_duration_s"] < real - 2
    w = json.loads((run_dir / "report.json").read_text())["maintenance_window"]
    assert abs(w["duration_s"] - real) < 1.0 and abs(w["downtime_actual_s"] - real) < 1.0, (w, real)
    assert len(w["attempts"]) == 2 and w["attempts"][1]["gap_before_s"] > 1.5


def test_killed_after_the_window_the_window_is_not_stretched(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    rb = yaml.safe_load((ROOT / "runbooks" / "monthly.yaml").read_text())
    verify = next(s for s in rb["stages"] if s["name"] == "post-verification")
    verify["steps"].append({"uses": "host.command", "destructive": False, "name": "wait for release",
                            "targets": "app", "with": {"argv": WAIT_FOR_RELEASE}})
    rb_path = tmp_path / "late.yaml"
    rb_path.write_text(yaml.safe_dump(rb, sort_keys=False))
    with FlagWatch(env) as watch:
        proc = _start("run", "--env", str(env), "--runbook", str(rb_path), "--engine", "local", "--json")
        run_dir = wait_for_event(state_dir(env) / "runs", "step.started", "wait for release")
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        time.sleep(2.5)
        release(env)
        res = run_cli("resume", run_dir.name, "--env", str(env), "--engine", "local", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
    w = report_of(res.stdout)["maintenance_window"]
    assert abs(w["duration_s"] - watch.lifetime) < 1.0, (w, watch.lifetime)
    kinds = [e["kind"] for e in events(run_dir)]
    assert kinds.count("window.opened") == 1 and kinds.count("window.closed") == 1


def test_died_between_maintenance_off_and_the_window_closing(make_env: Any, tmp_path: Path) -> None:
    """The log of a run that died right after lifting maintenance (a prefix of a real run's log, chain
    intact): the resumed attempt closes the window at the time maintenance went off, not at its own time."""
    env = make_env()
    res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr
    run_dir = Path(json.loads(res.stdout)["run_dir"])
    full = report_of(res.stdout)["maintenance_window"]
    lines = (run_dir / "audit.jsonl").read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "window.closed")
    (run_dir / "audit.jsonl").write_text("\n".join(lines[:cut]) + "\n")
    for name in ("report.json", "report.md", "report.html", "manifest.json"):
        (run_dir / name).unlink()
    last_off = max(json.loads(x)["ts"] for x in lines[:cut] if json.loads(x)["kind"] == "maintenance.off")
    time.sleep(2.0)
    again = run_cli("resume", run_dir.name, "--env", str(env), "--engine", "local", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    w = report_of(again.stdout)["maintenance_window"]
    assert w["ended_at"] == last_off, w
    assert abs(w["duration_s"] - full["duration_s"]) < 0.5, (w, full)
    closed = [e["data"] for e in events(run_dir) if e["kind"] == "window.closed"]
    assert len(closed) == 1 and closed[0]["ended_at"] == last_off and closed[0]["ok"] is True


def test_a_resumed_run_keeps_the_window_policy_of_its_start(make_env: Any) -> None:
    """A scheduled run resumed after its window: the schedule's window and cutoff still apply (not an
    open-ended "announced downtime" window starting at the resume)."""
    from pitstop.config import load_config
    from pitstop.context import RunContext, RunOptions
    from pitstop.executor import Executor
    from pitstop.model import Trigger
    from pitstop.runbook import load_runbook

    def scheduled(cfg: dict[str, Any]) -> None:
        cfg["schedules"] = {"monthly": {"cron": "0 3 1 * *", "duration": "2h", "cutoff": "90m",
                                        "runbook": "monthly"}}

    cfg = load_config(str(make_env(scheduled)))
    ctx = RunContext.create(cfg, load_runbook("monthly", cfg), RunOptions(trigger=Trigger.SCHEDULED),
                            run_id="20261101T023000Z-test-monthly-abcdef")
    try:
        ctx.state.earlier = EarlierAttempts(started_at="2026-11-01T02:30:00+00:00")  # 03:30 Berlin, in the window
        policy = Executor(ctx, completed={}).window
        assert policy.source == "schedule monthly", policy
        assert policy.cutoff_at == datetime(2026, 11, 1, 2, 30, tzinfo=UTC)  # 05:00 CET end - 90m
        assert policy.start == datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
    finally:
        ctx.close()


def test_an_overrun_counts_the_earlier_attempts_time(make_env: Any, tmp_path: Path) -> None:
    """Announced 2 s, the first attempt held the page 3 s before it died: the resumed attempt is overrunning
    from its first step on, and says so (window.extended), though its own part of the window is short."""
    def no_grace(cfg: dict[str, Any]) -> None:
        cfg.setdefault("notifications", {}).setdefault("notices", {})["overrun_grace"] = "0s"

    env = make_env(no_grace)
    rb = yaml.safe_load(blocking_runbook(tmp_path).read_text())
    rb["expected_downtime"] = "2s"
    rb_path = tmp_path / "short.yaml"
    rb_path.write_text(yaml.safe_dump(rb, sort_keys=False))
    proc = _start("run", "--env", str(env), "--runbook", str(rb_path), "--engine", "local", "--json")
    run_dir = wait_for_event(state_dir(env) / "runs", "step.started", "wait for release")
    time.sleep(3.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    release(env)
    res = run_cli("resume", run_dir.name, "--env", str(env), "--engine", "local", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    evs = events(run_dir)
    resumed_at = next(i for i, e in enumerate(evs) if e["kind"] == "run.resumed")
    extended = [e["data"] for e in evs[resumed_at:] if e["kind"] == "window.extended"]
    assert extended and extended[0]["elapsed_s"] > 3, extended
