"""Static guarantees: paramiko pinned to >= 3.4 (Terrapin, CVE-2023-48795) in pyproject and installed."""

from __future__ import annotations

import tomllib
from importlib.metadata import version

from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import ROOT


def test_paramiko_pinned_to_terrapin_fix() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [req] = [Requirement(d) for d in deps if Requirement(d).name == "paramiko"]
    assert req.specifier, "paramiko must carry a lower bound"
    assert not req.specifier.contains("3.3.9") and req.specifier.contains("3.4.0"), str(req.specifier)
    assert Version(version("paramiko")) >= Version("3.4")


def test_ruff_bandit_rules_enabled() -> None:
    lint = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert "S" in lint["select"], "the bandit-derived S rules must be on"
