"""Helpers shared by tests/maintenance and tests/tuning: sandbox environments written as real YAML,
run contexts built from them, and polling with a deadline (no fixed sleeps)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pitstop.config import load_config
from pitstop.context import RunContext, RunOptions
from pitstop.runbook import load_runbook

HOSTILE = [
    "; touch {canary}",
    "$(touch {canary})",
    "`touch {canary}`",
    "' ; touch {canary} ; '",
    '" ; touch {canary} ; "',
    "x\ntouch {canary}\n",
    "| touch {canary}",
    "&& touch {canary}",
]


def hostile(canary: Path) -> list[str]:
    return [h.replace("{canary}", str(canary)) for h in HOSTILE]


def write_env(tmp: Path, *, hosts: dict[str, dict[str, Any]] | None = None, maintenance: dict[str, Any] | None = None,
              groups: dict[str, list[str]] | None = None, extra: dict[str, Any] | None = None,
              pg_data_dir: Path | None = None) -> Path:
    """A config with local sandbox hosts under ``tmp/state``. Steps never contact the database; a
    full run does (environment lock), so pass the session's embedded ``pg_data_dir`` for runs."""
    hosts = hosts or {"web-1": {"transport": "local", "root": "hosts/web-1"},
                      "web-2": {"transport": "local", "root": "hosts/web-2"}}
    cfg: dict[str, Any] = {
        "name": f"mt-{uuid.uuid4().hex[:8]}", "state_dir": str(tmp / "state"),
        "database": {"embedded": True, "data_dir": str(pg_data_dir), "dbname": "postgres"} if pg_data_dir
        else {"host": "127.0.0.1", "port": 1, "dbname": "none"},
        "hosts": hosts, "groups": groups or {"web": list(hosts)},
        "maintenance": {"strategy": "flag_file", "targets": "web", "ttl_margin": "1m", **(maintenance or {})},
        "window": {"expected_downtime": "1m"},
        **(extra or {}),
    }
    path = tmp / "env.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    for h in hosts.values():
        if h.get("transport") == "local":
            (tmp / "state" / h["root"]).mkdir(parents=True, exist_ok=True)
    return path


def write_runbook(tmp: Path, stages: list[dict[str, Any]], name: str = "rb", expected: str | None = None) -> Path:
    doc: dict[str, Any] = {"name": name, "stages": stages}
    if expected:
        doc["expected_downtime"] = expected
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def make_ctx(env: Path, runbook: Path | None = None, tmp: Path | None = None) -> RunContext:
    cfg = load_config(str(env))
    rb_path = runbook or write_runbook(tmp or env.parent, [{"name": "preflight", "steps": []}], name="empty")
    return RunContext.create(cfg, load_runbook(str(rb_path), cfg), RunOptions())


def root_of(env: Path, host: str) -> Path:
    return env.parent / "state" / "hosts" / host


def wait_for(cond: Callable[[], bool], deadline_s: float = 30, what: str = "condition") -> None:
    """Poll ``cond`` until it holds; fail after ``deadline_s`` (a safety bound, not a speed goal)."""
    end = time.monotonic() + deadline_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie left for an absent reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def set_mtime(path: Path, days_old: float) -> None:
    t = time.time() - days_old * 86400
    os.utime(path, (t, t))
