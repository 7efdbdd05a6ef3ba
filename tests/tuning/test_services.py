"""service.restart through a real run: rolling one host at a time, health wait, a failed health
check halting the rollout, and `restart_if` making a second run change nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pitstop.registry import Placement, get_step
from pitstop.runner import execute
from tests.maintenance.helpers import root_of, write_env, write_runbook

HELPER = str(Path(__file__).with_name("restart_helper.py"))
HOSTS = {f"app-{i}": {"transport": "local", "root": f"hosts/app-{i}"} for i in range(1, 5)}


def _runbook(tmp: Path, journal: Path, fail_host: str = "") -> Path:
    step = {"uses": "service.restart", "targets": "web", "with": {
        "services": ["shop"], "manager": "command",
        "restart": [sys.executable, HELPER, "{service}", str(journal), fail_host],
        "restart_if": ["test", "-f", "restart-needed"],
        "health": ["test", "-f", "healthy-{service}"], "health_timeout_s": 1, "health_interval_s": 0.05}}
    return write_runbook(tmp, [{"name": "server-tuning", "steps": [step]}])


def _host_results(run_dir: Path) -> list[dict]:  # type: ignore[type-arg]
    for line in (run_dir / "audit.jsonl").read_text().splitlines():
        ev = json.loads(line)
        if ev["kind"] == "step.finished" and ev["data"].get("uses") == "service.restart":
            return ev["data"]["hosts"]
    raise AssertionError("no service.restart result")


def test_declared_rolling_inside_the_window() -> None:
    info = get_step("service.restart")
    assert info.placement == Placement.INSIDE and info.extra["serial"] == 1


def test_rolling_restart_one_host_at_a_time_then_idempotent(tmp_path: Path, pg_data_dir: Path) -> None:
    env = write_env(tmp_path, hosts=HOSTS, pg_data_dir=pg_data_dir)
    for h in HOSTS:
        (root_of(env, h) / "restart-needed").touch()
    journal = tmp_path / "journal.txt"
    res = execute(str(env), str(_runbook(tmp_path, journal)))
    assert res.status.value == "succeeded"
    lines = [line.split() for line in journal.read_text().splitlines()]
    # strictly "start X, end X" pairs: never two hosts restarting at once
    assert [w[0] for w in lines] == ["start", "end"] * 4
    assert all(lines[i][1] == lines[i + 1][1] for i in range(0, 8, 2))
    assert sorted(w[1] for w in lines[0::2]) == sorted(HOSTS)
    assert all(h["changed"] for h in _host_results(res.run_dir))
    res2 = execute(str(env), str(_runbook(tmp_path, journal)))
    assert res2.status.value == "succeeded" and len(journal.read_text().splitlines()) == 8
    assert not any(h["changed"] for h in _host_results(res2.run_dir))


def test_failed_health_halts_the_rollout(tmp_path: Path, pg_data_dir: Path) -> None:
    env = write_env(tmp_path, hosts=HOSTS, pg_data_dir=pg_data_dir)
    for h in HOSTS:
        (root_of(env, h) / "restart-needed").touch()
    journal = tmp_path / "journal.txt"
    res = execute(str(env), str(_runbook(tmp_path, journal, fail_host="app-1")))
    assert res.status.value == "failed"
    by_host = {h["host"]: h for h in _host_results(res.run_dir)}
    started = [line.split()[1] for line in journal.read_text().splitlines() if line.startswith("start")]
    assert started[-1] == "app-1"  # the first failure stops the rollout: nobody starts after it
    assert "not healthy after 1s" in by_host["app-1"]["error"]
    for host, h in by_host.items():
        if host not in started:
            assert "rollout halted after a failure on app-1" in h["error"]
        elif host != "app-1":
            assert h["status"] == "succeeded"


def test_systemd_manager_refused_on_sandbox(tmp_path: Path) -> None:
    from pitstop.fleet.services import RestartParams, service_restart
    from tests.maintenance.helpers import make_ctx

    ctx = make_ctx(write_env(tmp_path))
    with pytest.raises(Exception, match="no systemd"):
        service_restart(ctx, RestartParams(services=["nginx"]), "web-1")
