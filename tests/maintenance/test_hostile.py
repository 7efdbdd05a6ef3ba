"""Hostile values (`;`, `$()`, backticks, quotes, newlines, pipes) in every step parameter that
reaches a command are passed as plain arguments and never executed: the canary never appears.
Over the local transport here (argv lists, no shell); tests/maintenance/test_ssh.py does it over SSH."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pitstop.config import load_config
from pitstop.errors import RunbookError
from pitstop.maintenance_mode.state import MaintenanceState
from pitstop.maintenance_mode.steps import OnParams, maintenance_on
from pitstop.runbook import load_runbook
from pitstop.runner import execute

from .helpers import hostile, make_ctx, process_alive, root_of, set_mtime, wait_for, write_env, write_runbook


def hostile_steps(bad: list[str], base: str = "") -> list[dict[str, Any]]:
    """One step per (step kind, hostile value); ``base`` prefixes paths (a sandbox on SSH hosts)."""
    one_line = [b for b in bad if "\n" not in b]
    steps: list[dict[str, Any]] = []
    for b in bad:
        steps += [
            {"uses": "host.command", "destructive": False, "with": {"argv": ["echo", b], "unless": ["test", "-e", b]}},
            {"uses": "host.script", "destructive": False,
             "with": {"script": 'printf "%s" "$1" > /dev/null\n', "args": [b, "x"],
                                             "remote_dir": f"{base}/var/tmp" if base else "/var/tmp"}},
            {"uses": "service.restart", "with": {"services": ["app"], "manager": "command",
                                                 "restart": ["echo", "{service}", b], "restart_if": ["echo", b],
                                                 "health": ["echo", b], "health_timeout_s": 5}},
        ]
    for b in one_line:
        steps += [
            {"uses": "tuning.logs", "with": {"paths": [f"{base}/var/log/{b}"], "pattern": "*.log"}},
            {"uses": "disk.reclaim", "with": {"temp_dirs": [f"{base}/tmp/{b}"], "package_caches": False}},
        ]
    return [{**s, "window": "inside", "targets": "web"} for s in steps]


def test_hostile_values_in_every_step_never_execute(tmp_path: Path, pg_data_dir: Path) -> None:
    canary = tmp_path / "canary"
    bad = hostile(canary)
    for b in (b for b in bad if "\n" not in b):  # directories with hostile names exist and hold work
        log = root_of(write_env(tmp_path), "web-1") / "var/log" / b / "old.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("x")
        set_mtime(log, 3)
    env = write_env(tmp_path, pg_data_dir=pg_data_dir, maintenance={
        "strategy": "command", "message": " ".join(bad),
        "command": {"on": ["echo", "{message}", *bad], "off": ["echo", *bad], "status": ["test", "-e", bad[0]]}})
    rb = write_runbook(tmp_path, [
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on", "with": {"message": " ".join(bad)}}]},
        {"name": "server-tuning", "steps": hostile_steps(bad)},
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off"}]},
    ])
    res = execute(str(env), str(rb))
    assert res.status.value == "succeeded", res.report().get("failure")
    assert not canary.exists()
    assert len(list((root_of(env, "web-1") / "var/log").rglob("old.log.gz"))) == len(bad) - 1


def test_hostile_values_through_the_deadman_watcher(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    bad = hostile(canary)
    env = write_env(tmp_path, maintenance={"strategy": "command", "deadman": {"ttl": "1s"},
                                           "command": {"on": ["echo", *bad], "off": ["echo", "{message}", *bad],
                                                       "marker_path": "/var/tmp/" + bad[0]}})
    ctx = make_ctx(env, tmp=tmp_path)
    maintenance_on(ctx, OnParams(message=" ".join(bad)), "web-1")
    pid = int(ctx.state.of(MaintenanceState).deadman["web-1"].ref)
    wait_for(lambda: not process_alive(pid), what="the watcher to run the off argv")
    assert not (root_of(env, "web-1") / "var/tmp" / bad[0]).exists()  # it did lift (marker removed)
    assert not canary.exists()


@pytest.mark.parametrize("step", [
    {"uses": "tuning.sysctl", "with": {"values": {"vm.swappiness": "10\nkernel.core_pattern=|/bin/sh"}}},
    {"uses": "tuning.sysctl", "with": {"values": {"vm.swappiness": "$(touch /tmp/x)"}}},
    {"uses": "tuning.sysctl", "with": {"values": {"vm.swappiness; touch /tmp/x": "1"}}},
    {"uses": "packages.update", "with": {"packages": ["bash; touch /tmp/x"]}},
    {"uses": "service.restart", "with": {"services": ["$(touch /tmp/x)"]}},
    {"uses": "tuning.logs", "with": {"paths": ["-delete"]}},
    {"uses": "tuning.logs", "with": {"pattern": "*.log -o -delete"}},
    {"uses": "disk.reclaim", "with": {"temp_dirs": ["relative; rm -rf /"]}},
])
def test_values_that_cannot_be_safe_are_refused_with_file_and_line(tmp_path: Path, step: dict[str, Any]) -> None:
    env = write_env(tmp_path)
    rb = write_runbook(tmp_path, [{"name": "server-tuning", "steps": [{"uses": "host.command", "destructive": False,
                                                                       "with": {"argv": ["true"]}}, step]}])
    with pytest.raises(RunbookError, match=r"rb\.yaml:\d+ at stages\.0\.steps\.1\.with"):
        load_runbook(str(rb), load_config(str(env)))
