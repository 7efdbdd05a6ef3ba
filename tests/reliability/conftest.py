"""Reliability fixtures: reuse the real sshd lab (tests/fleet) and moto's S3 server (tests/backup)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.backup.conftest import moto_endpoint  # noqa: F401 - re-exported fixture
from tests.conftest import demo_config
from tests.fleet.sshlab import FakeHost, SshLab


@pytest.fixture(scope="session")
def rel_hosts(ssh_lab: SshLab) -> list[FakeHost]:
    """Three trusted sshd hosts for the reliability suite."""
    return ssh_lab.start(3, prefix="rel")


@pytest.fixture
def ssh_env(tmp_path: Path, pg_data_dir: Path, seeded_db: str, ssh_lab: SshLab,
            rel_hosts: list[FakeHost]) -> Callable[..., Path]:
    """The demo config with every host reached over real SSH (own root directory per host)."""

    def make(mutate: Callable[[dict[str, Any]], None] | None = None, name: str = "env.yaml",
             state: str = "state") -> Path:
        cfg = demo_config(tmp_path / state, pg_data_dir, seeded_db)
        roots = tmp_path / f"{state}-roots"
        cfg.update(ssh=ssh_lab.ssh_settings(), hosts=ssh_lab.host_entries(rel_hosts, roots),
                   groups={"web": [h.name for h in rel_hosts[:2]], "app": [rel_hosts[2].name]})
        cfg["maintenance"]["deadman"] = {"enabled": False}
        for h in rel_hosts:
            for d in ("var/www", "var/log/app"):
                (roots / h.name / d).mkdir(parents=True, exist_ok=True)
        if mutate:
            mutate(cfg)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    return make
