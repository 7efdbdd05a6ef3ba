"""Fleet fixtures: real OpenSSH servers on loopback (see sshlab.py), session-scoped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitstop.config import EnvironmentConfig, load_config
from tests.fleet.sshlab import FakeHost, SshLab


@pytest.fixture(scope="session")
def fleet(ssh_lab: SshLab) -> list[FakeHost]:
    """Eight trusted hosts served by one sshd."""
    return ssh_lab.start(8, prefix="web")


@pytest.fixture
def write_env(tmp_path: Path) -> Callable[..., Path]:
    """Write a config dict as YAML; returns the path (pass it as --env or to load_config)."""

    def write(cfg: dict[str, Any], name: str = "fleet.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    return write


@pytest.fixture
def fleet_env(
    ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path, write_env: Callable[..., Path]
) -> Callable[..., EnvironmentConfig]:
    """A loaded EnvironmentConfig over ``fleet`` (per-host root dirs under tmp_path/roots)."""

    def make(hosts: list[FakeHost] | None = None, **extra: Any) -> EnvironmentConfig:
        cfg = ssh_lab.config(hosts or fleet, tmp_path / "state", roots=tmp_path / "roots", **extra)
        return load_config(str(write_env(cfg)))

    return make
