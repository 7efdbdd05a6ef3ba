"""Shared helpers of the reliability suite: environments as real YAML text, CLI runs, audit reading."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import ROOT

DEMO_CONFIG = (ROOT / "config" / "demo.yaml").read_text()
MONTHLY = (ROOT / "runbooks" / "monthly.yaml").read_text()


def point_at(text: str, state: Path, pg_data_dir: Path, dbname: str) -> str:
    """The demo config text aimed at the session's PostgreSQL and a private state directory.

    Line numbers of everything below the `database:` section move by one (state_dir)."""
    text = text.replace("  data_dir: pgdata\n", f"  data_dir: {pg_data_dir}\n", 1)
    text = text.replace("  dbname: postgres\n", f"  dbname: {dbname}\n", 1)
    return f"state_dir: {state}\n" + text


def sessions(pg_socket: str, dbname: str) -> int:
    """Client sessions ever opened to ``dbname`` (autovacuum does not count; flushed at disconnect)."""
    with psycopg.connect(host=pg_socket, dbname="postgres", user="postgres", autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", [dbname]).fetchone()
        return int(row[0]) if row else 0


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pitstop.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pitstop.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "COLUMNS": "200", **(env or {})})


def events(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "audit.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by SIGKILL: everything before it is what the run recorded
    return out


def kill_when(proc: subprocess.Popen[str], runs: Path, predicate: Any, timeout: float = 120) -> Path | None:
    """SIGKILL ``proc`` as soon as ``predicate(events)`` holds for its run; returns the run dir
    (None if the run ended first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in runs.glob("*/audit.jsonl"):
            if predicate(events(d.parent)):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return d.parent
        if proc.poll() is not None:
            return None
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    raise AssertionError("kill point never reached")

