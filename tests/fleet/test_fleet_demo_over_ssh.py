"""The demo's monthly runbook, end to end, with every host reached over real SSH (each fake host
has its own root directory, so host paths like /var/www/maintenance.flag stay per host)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pitstop.model import Status
from pitstop.runner import execute
from tests.fleet.sshlab import FakeHost, SshLab


def seed_logs(root: Path) -> None:
    logs = root / "var/log/app"
    logs.mkdir(parents=True, exist_ok=True)
    (root / "var/www").mkdir(parents=True, exist_ok=True)
    (logs / "app.log").write_text("live\n")
    for name, days in (("app-3d.log", 3), ("app-45d.log.gz", 45)):
        (logs / name).write_text("old\n" * 20)
        t = time.time() - days * 86400
        os.utime(logs / name, (t, t))


def test_monthly_runbook_over_ssh(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path,
                                  make_env) -> None:  # type: ignore[no-untyped-def]
    hosts = fleet[:3]
    roots = tmp_path / "roots"

    def mutate(cfg: dict) -> None:  # type: ignore[type-arg]
        cfg.update(ssh=ssh_lab.ssh_settings(), hosts=ssh_lab.host_entries(hosts, roots),
                   groups={"web": [h.name for h in hosts[:2]], "app": [hosts[2].name]})

    env = make_env(mutate)
    for h in hosts:
        seed_logs(roots / h.name)
    result = execute(str(env), "monthly")
    report = result.report()
    assert result.status == Status.SUCCEEDED, report.get("failure")
    for h in hosts:
        logs = roots / h.name / "var/log/app"
        assert (logs / "app-3d.log.gz").exists() and not (logs / "app-3d.log").exists()
        assert not (logs / "app-45d.log.gz").exists()
        assert not (roots / h.name / "var/www/maintenance.flag").exists()
    audit = (result.run_dir / "audit.jsonl").read_text()
    assert audit.count('"maintenance.on"') >= 2  # both web hosts flagged over SSH, then cleared
