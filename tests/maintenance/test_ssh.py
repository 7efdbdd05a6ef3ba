"""Maintenance mode and tuning over real OpenSSH (sshd on loopback, tests/fleet/sshlab.py):
dead-man armed over SSH survives the session, hostile values never execute remotely, sysctl and
log steps are idempotent on a second run. Hosts get a `root` directory so nothing outside tmp
is touched (the sshd "hosts" are this machine)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitstop.config import load_config
from pitstop.context import RunContext, RunOptions
from pitstop.fleet.packages import PackagesParams, packages_update, plan_packages
from pitstop.fleet.sysctl import SysctlParams, tuning_sysctl
from pitstop.fleet.tuning import LogParams, tuning_logs
from pitstop.maintenance_mode.state import MaintenanceState
from pitstop.maintenance_mode.steps import OffParams, OnParams, maintenance_off_host, maintenance_on
from pitstop.runbook import load_runbook
from pitstop.runner import execute
from tests.fleet.sshlab import SshLab

from .helpers import hostile, process_alive, set_mtime, wait_for, write_runbook
from .test_hostile import hostile_steps


@pytest.fixture(scope="module")
def lab(ssh_lab: SshLab) -> tuple[SshLab, list[Any]]:
    """Two hosts of the suite's one sshd lab (tests/conftest.py)."""
    return ssh_lab, ssh_lab.start(2, prefix="web")


def _env(tmp: Path, lab: tuple[SshLab, list[Any]], pg_data_dir: Path | None = None, **extra: Any) -> Path:
    ssh_lab, hosts = lab
    cfg = ssh_lab.config(hosts, tmp / "state", roots=tmp / "roots", **extra)
    cfg["groups"] = {"web": [h.name for h in hosts]}
    cfg["maintenance"] = {"targets": "web", "ttl_margin": "1m", **cfg.get("maintenance", {})}
    if pg_data_dir:
        cfg["database"] = {"embedded": True, "data_dir": str(pg_data_dir), "dbname": "postgres"}
    path = tmp / "env.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _ctx(env: Path, tmp: Path) -> RunContext:
    cfg = load_config(str(env))
    rb = write_runbook(tmp, [{"name": "preflight", "steps": []}], name="empty")
    return RunContext.create(cfg, load_runbook(str(rb), cfg), RunOptions())


def test_flag_and_deadman_over_ssh(tmp_path: Path, lab: tuple[SshLab, list[Any]]) -> None:
    env = _env(tmp_path, lab, maintenance={"deadman": {"ttl": "2s"}})
    ctx = _ctx(env, tmp_path)
    flag = tmp_path / "roots/web-1/var/www/maintenance.flag"
    maintenance_on(ctx, OnParams(), "web-1")
    assert json.loads(flag.read_text())["run_id"] == ctx.run_id
    handle = ctx.state.of(MaintenanceState).deadman["web-1"]
    assert handle.method == "setsid" and process_alive(int(handle.ref))
    maintenance_off_host(ctx, OffParams(), "web-1")
    assert not flag.exists()
    wait_for(lambda: not process_alive(int(handle.ref)), what="watcher cancelled over SSH")
    # on again, then the SSH session goes away without an off: the host lifts maintenance itself
    maintenance_on(ctx, OnParams(), "web-2")
    flag2 = tmp_path / "roots/web-2/var/www/maintenance.flag"
    assert flag2.exists()
    ctx.close()
    wait_for(lambda: not flag2.exists(), deadline_s=30, what="dead-man to lift after the session closed")


def test_hostile_values_over_ssh(tmp_path: Path, lab: tuple[SshLab, list[Any]], pg_data_dir: Path) -> None:
    canary = tmp_path / "canary"
    bad = hostile(canary)
    env = _env(tmp_path, lab, pg_data_dir, maintenance={
        "strategy": "command", "message": " ".join(bad),
        "command": {"on": ["echo", "{message}", *bad], "off": ["echo", *bad],
                    "marker_path": str(tmp_path / "marker.json")}})
    for h in ("web-1", "web-2"):
        (tmp_path / "roots" / h / "var/tmp").mkdir(parents=True)
        for b in (b for b in bad if "\n" not in b):  # directories with hostile names hold real work
            log = tmp_path / "roots" / h / "var/log" / b / "old.log"
            log.parent.mkdir(parents=True)
            log.write_text("x")
            set_mtime(log, 3)
    rb = write_runbook(tmp_path, [
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on"}]},
        {"name": "server-tuning", "steps": hostile_steps(bad)},
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off"}]},
    ])
    res = execute(str(env), str(rb))
    assert res.status.value == "succeeded", res.report().get("failure")
    assert not canary.exists()
    assert len(list((tmp_path / "roots/web-1/var/log").rglob("old.log.gz"))) == len([b for b in bad if "\n" not in b])


def test_sysctl_and_logs_idempotent_over_ssh(tmp_path: Path, lab: tuple[SshLab, list[Any]]) -> None:
    env = _env(tmp_path, lab)
    logs = tmp_path / "roots/web-1/var/log/app"
    logs.mkdir(parents=True)
    for name, days in (("a.log", 3), ("b.log", 0), ("c.log.gz", 50)):
        (logs / name).write_text("x" * 100)
        set_mtime(logs / name, days)
    ctx = _ctx(env, tmp_path)
    lp = LogParams(paths=["/var/log/app"], compress_after_days=1, delete_after_days=30)
    first = tuning_logs(ctx, lp, "web-1")
    assert first.data["compressed"] == 1 and first.data["deleted"] == 1
    assert sorted(p.name for p in logs.iterdir()) == ["a.log.gz", "b.log"]
    assert not tuning_logs(ctx, lp, "web-1").changed

    sp = SysctlParams(values={"net.core.somaxconn": 4096, "vm.swappiness": 10})
    out = tuning_sysctl(ctx, sp, "web-1")
    assert out.changed and out.data["applied"] is False  # a host with a root dir is a sandbox
    assert (tmp_path / "roots/web-1/etc/sysctl.d/90-pitstop.conf").read_text().endswith(
        "net.core.somaxconn = 4096\nvm.swappiness = 10\n")
    assert not tuning_sysctl(ctx, sp, "web-1").changed
    ctx.close()


def test_sysctl_live_path_over_ssh_without_root(tmp_path: Path, lab: tuple[SshLab, list[Any]]) -> None:
    """A real host (no root dir): live values read over SSH, verified, drop-in written where asked.
    The value equals the live one, so this machine's kernel is never changed."""
    env = _env(tmp_path, lab)
    doc = yaml.safe_load(env.read_text())
    for h in doc["hosts"].values():
        h.pop("root", None)
    env.write_text(yaml.safe_dump(doc))
    ctx = _ctx(env, tmp_path)
    live = Path("/proc/sys/net/core/somaxconn").read_text().strip()
    dropin = tmp_path / "sysctl.d/90-pitstop.conf"
    sp = SysctlParams(values={"net.core.somaxconn": live}, file=str(dropin))
    out = tuning_sysctl(ctx, sp, "web-2")
    assert out.data["applied"] is True and out.data["values"]["net.core.somaxconn"]["old"] == live
    assert out.data["values"]["net.core.somaxconn"]["set"] is False and dropin.exists()
    assert not tuning_sysctl(ctx, sp, "web-2").changed
    ctx.close()


def _host_with_shim(tmp_path: Path, ssh_lab: SshLab, tool: str, body: str) -> tuple[Any, Path]:
    """A new sshd "host" whose PATH starts with a shim for ``tool``: it records each call's
    arguments in the returned log, then runs ``body`` (shell)."""
    shim = tmp_path / f"shim-{tool}"
    shim.mkdir()
    used = tmp_path / f"{tool}.log"
    (shim / tool).write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {used}\n{body}\n')
    (shim / tool).chmod(0o755)
    host = ssh_lab.start(1, prefix=tool, extra=f"SetEnv PATH={shim}:/usr/sbin:/usr/bin:/sbin:/bin "
                                               f"HOME={ssh_lab.home}")[0]
    return host, used


def test_packages_refresh_the_lists_before_the_run(tmp_path: Path, lab: tuple[SshLab, list[Any]]) -> None:
    """apt: the run fetches the package lists (apt-get update) before it works out and applies the
    upgrades; the plan reads the lists as they are and changes nothing. The shim runs apt-get's
    read-only simulation for real and records, but never performs, update and upgrade (the "host"
    is this machine)."""
    ssh_lab, _ = lab
    simulate_only = 'case " $* " in *" -s "*) exec /usr/bin/apt-get "$@";; esac\nexit 0'
    host, used = _host_with_shim(tmp_path, ssh_lab, "apt-get", simulate_only)
    env = _env(tmp_path, (ssh_lab, [host]))
    doc = yaml.safe_load(env.read_text())
    doc["hosts"][host.name].pop("root")  # a real host, not a sandbox
    env.write_text(yaml.safe_dump(doc))
    ctx = _ctx(env, tmp_path)
    params = PackagesParams(manager="apt", packages=["dpkg"])
    assert plan_packages(ctx, params, host.name)[0].endswith("(the run refreshes the package lists first)")
    assert [line.split()[-1] for line in used.read_text().splitlines()] == ["dpkg"]  # plan: the simulation only
    used.write_text("")
    out = packages_update(ctx, params, host.name)
    calls = used.read_text().splitlines()
    assert calls[0] == "-q -o DPkg::Lock::Timeout=120 update" and " -s " in f" {calls[1]} ", calls
    assert out.data["manager"] == "apt" and isinstance(out.data["reboot_required"], bool)
    if out.data["upgraded"]:  # this machine's lists had an upgrade for dpkg: applied after the simulation
        assert calls[2].endswith("install --only-upgrade -- dpkg") and "-y" in calls[2].split(), calls
    used.write_text("")
    packages_update(ctx, PackagesParams(manager="apt", packages=["dpkg"], refresh=False), host.name)
    assert not any(c.endswith(" update") for c in used.read_text().splitlines())
    ctx.close()


def test_step_sudo_covers_file_writes(tmp_path: Path, lab: tuple[SshLab, list[Any]]) -> None:
    """``sudo: true`` on a step (sysctl) or on maintenance (flag file) also covers the files they
    write, read and remove: a drop-in under /etc needs root as much as `sysctl -w` does. A `sudo`
    shim first on the sshd's PATH records every use, then runs the real sudo."""
    ssh_lab, _ = lab
    host, used = _host_with_shim(tmp_path, ssh_lab, "sudo", 'exec /usr/bin/sudo "$@"')
    env = _env(tmp_path, (ssh_lab, [host]), maintenance={"sudo": True, "deadman": {"enabled": False}})
    ctx = _ctx(env, tmp_path)
    sp = SysctlParams(values={"vm.swappiness": 10}, sudo=True)
    assert tuning_sysctl(ctx, sp, host.name).changed
    assert (tmp_path / f"roots/{host.name}/etc/sysctl.d/90-pitstop.conf").read_text().endswith("vm.swappiness = 10\n")
    log = used.read_text()
    assert "pitstop-put" in log and "cat -- " in log and "test -e " in log, log  # write, read back, look
    used.write_text("")
    flag = tmp_path / f"roots/{host.name}/var/www/maintenance.flag"
    maintenance_on(ctx, OnParams(), host.name)
    assert flag.exists() and "pitstop-put" in used.read_text()
    maintenance_off_host(ctx, OffParams(), host.name)
    assert not flag.exists() and f"rm -f -- {flag}" in used.read_text()
    ctx.close()


def test_on_call_lifts_maintenance_a_dead_run_left_on(tmp_path: Path, lab: tuple[SshLab, list[Any]],
                                                      pg_data_dir: Path) -> None:
    """A run turned maintenance on over SSH and died (no off, dead-man far away). On-call sees it
    with `pitstop maintenance status` and lifts it with `pitstop maintenance off --reason`: refused
    while a run holds the environment, recorded (who, why, which hosts) in an audit log of its own."""
    from pitstop.connectors.postgres import Database
    from pitstop.locks import EnvironmentLock
    from tests.conftest import run_cli

    env = _env(tmp_path, lab, pg_data_dir, maintenance={"deadman": {"ttl": "1h"}})
    ctx = _ctx(env, tmp_path)
    for h in ("web-1", "web-2"):
        maintenance_on(ctx, OnParams(), h)
    ctx.close()  # the run is gone; maintenance stays on
    flags = [tmp_path / f"roots/{h}/var/www/maintenance.flag" for h in ("web-1", "web-2")]
    assert all(f.exists() for f in flags)

    status = run_cli("maintenance", "status", "--env", str(env), "--json")
    assert status.returncode == 0, status.stderr
    assert [(r["host"], r["on"], r["run_id"]) for r in json.loads(status.stdout)] == [
        ("web-1", True, ctx.run_id), ("web-2", True, ctx.run_id)]
    assert "2 of 2 host(s) on" in run_cli("maintenance", "status", "--env", str(env)).stdout

    assert run_cli("maintenance", "off", "--env", str(env)).returncode == 2  # no --reason: usage error
    cfg = load_config(str(env))
    with EnvironmentLock(Database(cfg), cfg.name, "20261201T000000Z-fleet-monthly-live"):
        busy = run_cli("maintenance", "off", "--env", str(env), "--reason", "run crashed")
        assert busy.returncode == 1 and "monthly-live holds environment" in " ".join(busy.stderr.split())
        assert all(f.exists() for f in flags)  # refused: nothing lifted
    off = run_cli("maintenance", "off", "--env", str(env), "--reason", "run 1234 crashed at 03:12", "--json")
    assert off.returncode == 0, off.stderr
    result = json.loads(off.stdout)
    assert [(r["host"], r["action"], r["on"]) for r in result["hosts"]] == [
        ("web-1", "lifted", False), ("web-2", "lifted", False)]
    assert result["still_on"] == [] and not any(f.exists() for f in flags)
    events = [json.loads(line) for line in Path(result["audit_log"]).read_text().splitlines()]
    manual = next(e for e in events if e["kind"] == "maintenance.manual_off")
    assert manual["data"]["reason"] == "run 1234 crashed at 03:12" and manual["data"]["operator"]
    assert sorted(e["data"]["host"] for e in events if e["kind"] == "maintenance.off") == ["web-1", "web-2"]
    folder = Path(result["audit_log"]).parent
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"audit.jsonl", "record.json"}
    assert json.loads((folder / "record.json").read_text())["reason"] == "run 1234 crashed at 03:12"
    verify = run_cli("report", "verify", str(folder))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    again = run_cli("maintenance", "off", "--env", str(env), "--reason", "check", "--json")
    assert [r["action"] for r in json.loads(again.stdout)["hosts"]] == ["was off", "was off"]


def test_one_connection_per_host_across_stages(tmp_path: Path, lab: tuple[SshLab, list[Any]],
                                               pg_data_dir: Path) -> None:
    """A run opens one SSH connection per host and reuses it for every step of every stage (and
    the dead-man's arming and cancelling): the host's sshd accepts exactly one login per run."""
    _, hosts = lab
    env = _env(tmp_path, lab, pg_data_dir)
    rb = write_runbook(tmp_path, [
        {"name": "preflight", "steps": [{"uses": "host.command", "destructive": False,
                                         "targets": "web", "with": {"argv": ["true"]}}]},
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on"}]},
        {"name": "server-tuning", "steps": [
            {"uses": "host.command", "destructive": False,
             "name": "a", "targets": "web", "with": {"argv": ["echo", "a"]}},
            {"uses": "host.command", "destructive": False,
             "name": "b", "targets": "web", "with": {"argv": ["echo", "b"]}}]},
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off"}]},
    ])

    sshds = list({id(h.sshd): h.sshd for h in hosts}.values())  # the hosts share an sshd (and its log)

    def logins() -> int:
        return sum(d.log.count("Accepted publickey for root") for d in sshds)

    before = logins()
    res = execute(str(env), str(rb))
    assert res.status.value == "succeeded", res.report().get("failure")
    assert logins() - before == len(hosts)  # four stages, five steps, the dead-man: one login per host


def test_sigkill_in_maintenance_over_ssh_is_lifted_by_the_ttl(tmp_path: Path, lab: tuple[SshLab, list[Any]],
                                                              pg_data_dir: Path) -> None:
    """A real `pitstop run` over SSH, killed with SIGKILL while its hosts are in maintenance: the
    watchers it armed on the hosts (through SSH, in sessions of their own) lift it after the TTL."""
    import os
    import signal
    import subprocess
    import sys

    env = _env(tmp_path, lab, pg_data_dir, maintenance={"deadman": {"ttl": "3s", "renew": False}})
    rb = write_runbook(tmp_path, [
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on"}]},
        {"name": "server-tuning", "steps": [{"uses": "host.command", "destructive": False,
                                             "name": "long work", "targets": "web-1",
                                             "with": {"argv": ["sleep", "60.5"], "timeout_s": 120}}]},
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off"}]},
    ])
    flags = [tmp_path / f"roots/{h}/var/www/maintenance.flag" for h in ("web-1", "web-2")]
    proc = subprocess.Popen([sys.executable, "-m", "pitstop.cli", "run", "--env", str(env), "--runbook", str(rb),
                             "--engine", "local", "--json"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: all(f.exists() for f in flags) or proc.poll() is not None, deadline_s=60,
                 what="maintenance on over SSH")
        assert proc.poll() is None
        wait_for(lambda: subprocess.run(["pgrep", "-f", "sleep 60.5"], capture_output=True).returncode == 0,
                 deadline_s=30, what="the long step running on the host")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert all(f.exists() for f in flags), "killed inside the window"
    wait_for(lambda: not any(f.exists() for f in flags), deadline_s=60, what="the hosts' TTL to lift maintenance")
    subprocess.run(["pkill", "-f", "sleep 60.5"], check=False)  # the remote step itself outlives the client
