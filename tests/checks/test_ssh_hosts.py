"""Host checks over real SSH (OpenSSH sshd on loopback, host keys verified), as on production hosts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitstop.model import CheckStatus
from tests.fleet.sshlab import SshLab

from .conftest import run


@pytest.fixture(scope="module")
def lab(ssh_lab: SshLab) -> SshLab:
    """The suite's one sshd lab (tests/conftest.py)."""
    return ssh_lab


@pytest.fixture
def ssh_ctx(lab: SshLab, tmp_path: Path) -> Iterator[Any]:
    from pitstop.config import load_config
    from pitstop.context import RunContext, RunOptions
    from pitstop.registry import load_plugins
    from pitstop.runbook import Runbook

    load_plugins()
    hosts = lab.start(1, prefix="db")
    cfg = lab.config(hosts, tmp_path / "state", roots=tmp_path / "roots",
                     maintenance={"targets": "fleet", "flag_path": "/var/www/maintenance.flag"})
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    ctx = RunContext.create(load_config(str(path)), Runbook.model_validate({"name": "t", "stages": []}),
                            RunOptions())
    ctx.lab_host = hosts[0].name  # type: ignore[attr-defined]
    yield ctx
    ctx.close()


def test_host_checks_over_ssh(ssh_ctx, http_url):
    host = ssh_ctx.lab_host
    disk = run(ssh_ctx, "disk_free", {"min_free_pct": 0}, host=host)
    assert disk.status == CheckStatus.PASS and disk.evidence["size_kb"] > 0
    assert run(ssh_ctx, "inodes_free", {"min_free_pct": 0}, host=host).status == CheckStatus.PASS
    assert run(ssh_ctx, "service_active", {"argv": ["true"]}, host=host).status == CheckStatus.PASS
    down = run(ssh_ctx, "service_active", {"argv": ["sh", "-c", "echo stopped; exit 3"]}, host=host)
    assert down.status == CheckStatus.FAIL and down.evidence["exit_code"] == 3
    ssh_ctx.host(host).put("/var/www/maintenance.flag", b"{}")
    assert run(ssh_ctx, "maintenance_off", {}, host=host).status == CheckStatus.FAIL
    ssh_ctx.host(host).remove("/var/www/maintenance.flag")
    ok = run(ssh_ctx, "maintenance_off", {"url": f"{http_url}/"}, host=host)
    assert ok.status == CheckStatus.PASS and ok.evidence["http_status"] == 200
