"""A window longer than the dead-man's TTL: while the run is alive it renews the watchers (every
TTL/2, from a thread of its own, so one step longer than the TTL is covered), never past
``deadman.max_hold``; the flag shows the renewed expiry and the old watcher never lifts early."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

from pitstop.runner import execute

from .helpers import root_of, write_env, write_runbook

FLAG = "var/www/maintenance.flag"


def _runbook(tmp: Path, sleep_s: float) -> Path:
    return write_runbook(tmp, [
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on"}]},
        {"name": "server-tuning", "steps": [
            {"uses": "host.command", "destructive": False, "name": "one step longer than the TTL", "targets": "web",
             "with": {"argv": ["sleep", str(sleep_s)], "timeout_s": 60}},
            {"uses": "host.command", "destructive": False, "name": "still in maintenance", "targets": "web",
             "with": {"argv": ["test", "-e", FLAG]}}]},  # the sandbox root is the command's cwd
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off"}]},
    ])


def _events(result: object, kind: str) -> list[dict[str, object]]:
    lines = (result.run_dir / "audit.jsonl").read_text().splitlines()  # type: ignore[attr-defined]
    return [e["data"] for e in map(json.loads, lines) if e["kind"] == kind]


def test_a_long_window_keeps_maintenance_on_until_the_run_lifts_it(tmp_path: Path, pg_data_dir: Path) -> None:
    env = write_env(tmp_path, maintenance={"deadman": {"ttl": "2s"}}, pg_data_dir=pg_data_dir)
    result = execute(str(env), str(_runbook(tmp_path, 4.5)))
    assert result.status.value == "succeeded", result.report().get("failure")
    renewed = [e for e in _events(result, "maintenance.deadman_armed") if e.get("renewed")]
    assert {e["host"] for e in renewed} == {"web-1", "web-2"} and len(renewed) >= 4  # about every second
    assert not any(_events(result, "maintenance.deadman_renew_failed"))
    assert not any((root_of(env, h) / FLAG).exists() for h in ("web-1", "web-2"))  # lifted by the run


def test_renewal_stops_at_max_hold(tmp_path: Path, pg_data_dir: Path) -> None:
    env = write_env(tmp_path, maintenance={"deadman": {"ttl": "2s", "max_hold": "3s"}}, pg_data_dir=pg_data_dir)
    result = execute(str(env), str(_runbook(tmp_path, 5)))
    assert result.status.value == "failed"  # the hosts left maintenance at the cap, under the running step
    failure = json.dumps(result.report()["failure"])
    assert "still in maintenance" in failure and "exited 1" in failure
    armed = _events(result, "maintenance.deadman_armed")
    first = datetime.fromisoformat(str(armed[0]["expires_at"]))  # maintenance went on 2 s (the TTL) before
    last = max(datetime.fromisoformat(str(e["expires_at"])) for e in armed)
    assert any(e.get("renewed") for e in armed) and last == first + timedelta(seconds=1)  # since + max_hold
