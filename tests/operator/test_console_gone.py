"""The console is a viewer: whatever happens to stdout/stderr, the run's course and exit code are its own.

Real sinks only: a terminal (pty) that is resized and then hung up mid-window (EIO), ``--json`` output to
a full disk (``/dev/full``: ENOSPC) or to a reader that already left (EPIPE), ``pitstop demo --reset |
head -6`` on both engines, and Prefect's own rich log handler writing to a closed pipe.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.operator.helpers import (
    assert_complete_success,
    blocking_runbook,
    events,
    only_run,
    release,
    state_dir,
    wait_for_event,
)


def _clean(stderr: str) -> None:
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-3000:]


def _take_terminal() -> None:  # in the child: the pty on stdout becomes its controlling terminal
    fcntl.ioctl(1, termios.TIOCSCTTY, 0)


def test_a_terminal_resized_then_hung_up_mid_window_never_changes_the_run(make_env: Any, tmp_path: Path) -> None:
    """The operator's terminal is resized, then hangs up (SSH dropped) while the run is inside its window:
    the kernel sends SIGHUP to the session, the shell passes it on to the job's process group, and every
    later write to the terminal fails with EIO. The run — and the commands it runs — carry on; it succeeds,
    exits 0, and its audit log says once that the console went away."""
    env = make_env()
    rb = blocking_runbook(tmp_path)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "pitstop.cli", "run", "--env", str(env), "--runbook", str(rb),
                             "--engine", "local"], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=ROOT,
                            env={k: v for k, v in os.environ.items() if k != "COLUMNS"}, start_new_session=True,
                            preexec_fn=_take_terminal)
    os.close(slave)
    seen = bytearray()
    stop = threading.Event()

    def drain() -> None:  # a terminal shows what it gets: the child must never block on a full pty
        while not stop.is_set():
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        run_dir = wait_for_event(state_dir(env) / "runs", "step.started", "wait for release")
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 47, 0, 0))  # the window shrinks
        os.kill(proc.pid, signal.SIGWINCH)
        assert b"inside window" in bytes(seen), bytes(seen)[-2000:]
    finally:
        stop.set()
        os.close(master)  # hang-up: SIGHUP to the session leader, every later write to the terminal is EIO
    os.killpg(proc.pid, signal.SIGHUP)  # what the login shell does to its jobs when it gets SIGHUP
    release(env)
    assert proc.wait(timeout=300) == 0
    reader.join(timeout=5)
    assert_complete_success(run_dir, state_dir(env) / "customers.jsonl")
    notes = [e["data"] for e in events(run_dir) if e["kind"] == "console.off"]
    assert len(notes) == 1 and notes[0]["reason"] == "EIO", notes


@pytest.mark.parametrize("sink", ["> /dev/full", "| head -c 0"])
def test_json_output_nobody_can_take_keeps_the_runs_exit_code(make_env: Any, tmp_path: Path, sink: str) -> None:
    """``--json`` is written at the very end, after the run: a full disk (ENOSPC) or a reader that left
    (EPIPE) must not turn a succeeded run into exit 1 with a traceback."""
    env = make_env()
    rc_file = tmp_path / "rc"
    cmd = (f"{{ {sys.executable} -m pitstop.cli run --env {env} --runbook monthly --engine local --json; "
           f"echo $? > {rc_file}; }} {sink}")
    proc = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, cwd=ROOT, env=dict(os.environ),
                          timeout=600)
    assert rc_file.read_text().strip() == "0", proc.stderr[-3000:]
    _clean(proc.stderr)
    assert_complete_success(only_run(tmp_path / "state"), tmp_path / "state" / "customers.jsonl")


@pytest.mark.parametrize("engine", ["local", "prefect"])
def test_demo_piped_into_head_leaves_a_complete_report(tmp_path: Path, engine: str,
                                                       request: pytest.FixtureRequest) -> None:
    """``pitstop demo --reset | head -6`` once died after the first event and left no report."""
    state = tmp_path / "demo-state"
    env_vars = {**os.environ, "PITSTOP_STATE_DIR": str(state), "COLUMNS": "80"}
    if engine == "prefect":
        env_vars["PREFECT_API_URL"] = request.getfixturevalue("prefect_api")
    rc_file = tmp_path / "rc"
    cmd = f"{{ {sys.executable} -m pitstop.cli demo --reset --engine {engine}; echo $? > {rc_file}; }} | head -6"
    proc = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, cwd=tmp_path, env=env_vars, timeout=900)
    assert rc_file.read_text().strip() == "0", proc.stderr[-3000:]
    assert len(proc.stdout.splitlines()) == 6
    _clean(proc.stderr)
    run_dir = only_run(state)
    assert_complete_success(run_dir, state / "customers.jsonl")
    notes = [e["data"] for e in events(run_dir) if e["kind"] == "console.off"]
    assert [n["reason"] for n in notes] == ["EPIPE"], notes


def test_prefects_rich_log_handler_on_a_closed_pipe_does_not_exit(tmp_path: Path) -> None:
    """Prefect logs through a rich console on stderr (root logger). rich answers a closed pipe with
    ``SystemExit(1)``, raised from whatever logged the line — inside a flow run, the run. The runner makes
    every such console a viewer before the run starts."""
    from prefect.logging.handlers import PrefectConsoleHandler
    from rich.console import Console

    from pitstop.console import guard_log_consoles

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`| head`) is gone
    sink = os.fdopen(write_end, "w")
    handler = PrefectConsoleHandler(stream=sink)
    assert isinstance(handler.console, Console)
    log = logging.getLogger("pitstop-test-closed-pipe")
    log.propagate = False
    log.addHandler(handler)
    try:
        guard_log_consoles()
        log.warning("a warning while nobody reads stderr")
        log.warning("and another")  # switched off: not even tried
    finally:
        log.removeHandler(handler)
        sink.close()
    assert getattr(handler.console, "switched_off", None) == "EPIPE"


def test_version_to_a_full_disk_is_quiet() -> None:
    proc = subprocess.run([sys.executable, "-m", "pitstop.cli", "--version"], stdout=open(os.devnull, "w")
                          if not Path("/dev/full").exists() else open("/dev/full", "w"), stderr=subprocess.PIPE,
                          text=True, cwd=ROOT, timeout=120)
    _clean(proc.stderr)
    assert proc.returncode == 0, proc.stderr


def test_run_piped_into_head_1_leaves_a_succeeded_run_with_a_complete_report(make_env: Any, tmp_path: Path) -> None:
    """Issue 19's "done when": ``pitstop run … | head -1`` (the reader leaves after the first line)."""
    env = make_env()
    rc_file = tmp_path / "rc"
    cmd = (f"{{ {sys.executable} -m pitstop.cli run --env {env} --runbook monthly --engine local; "
           f"echo $? > {rc_file}; }} | head -1")
    proc = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "80"}, timeout=600)
    assert rc_file.read_text().strip() == "0", proc.stderr[-3000:]
    assert len(proc.stdout.splitlines()) == 1 and "pitstop run" in proc.stdout
    _clean(proc.stderr)
    run_dir = only_run(tmp_path / "state")
    assert_complete_success(run_dir, tmp_path / "state" / "customers.jsonl")
    assert {"report.json", "report.md", "report.html", "manifest.json"} <= {p.name for p in run_dir.iterdir()}
