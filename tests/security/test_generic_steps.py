"""Generic steps must say whether they destroy data, and a destructive one is under the backup gate;
sysctl keys cannot become options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from pitstop.fleet.sysctl import SysctlParams
from tests.conftest import run_cli
from tests.reliability.results import record


def _runbook(path: Path, step: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"name": "generic", "kind": "custom", "stages": [
        {"name": "server-tuning", "steps": [step]}]}, sort_keys=False))
    return path


@pytest.mark.parametrize("uses,with_", [("host.command", {"argv": ["true"]}),
                                         ("host.script", {"script": "true\n"}),
                                         ("check.sql_assert", {"sql": "SELECT 1", "expect_rows": 1})])
def test_a_generic_step_without_destructive_is_bad_input(make_env: Any, tmp_path: Path, uses: str,
                                                         with_: dict[str, Any]) -> None:
    targets = {} if uses.startswith("check.") else {"targets": "app"}
    rb = _runbook(tmp_path / "generic.yaml", {"uses": uses, **targets, "with": with_})
    res = run_cli("validate", "--env", str(make_env()), "--runbook", str(rb))
    assert res.returncode == 2, res.stdout + res.stderr
    flat = " ".join(res.stderr.split())
    assert "generic.yaml:" in flat and "destructive: true" in flat and "destructive: false" in flat


def test_a_destructive_generic_step_needs_a_verified_backup(make_env: Any, tmp_path: Path) -> None:
    marker = tmp_path / "partitions-dropped"
    rb = _runbook(tmp_path / "generic.yaml", {"uses": "host.command", "targets": "app", "destructive": True,
                                              "with": {"argv": ["touch", str(marker)]}})
    res = run_cli("run", "--env", str(make_env()), "--runbook", str(rb), "--engine", "local")
    record("generic_destructive", forged_inputs=1, trusted=int(marker.exists()))
    assert res.returncode == 1, res.stdout + res.stderr
    assert not marker.exists(), "a destructive generic step ran without a verified backup"
    assert "verified backup" in " ".join(res.stdout.split() + res.stderr.split())


@pytest.mark.parametrize("key", ["-p", "--load=/etc/evil", "-a.b", "net..x"])
def test_sysctl_keys_cannot_be_options(key: str) -> None:
    with pytest.raises(ValidationError):
        SysctlParams(values={key: "1"})
    assert SysctlParams(values={"net.core.somaxconn": 1024}).values


def test_a_destructive_sql_step_needs_a_verified_backup(make_env: Any, tmp_path: Path) -> None:
    """READ ONLY does not stop pg_terminate_backend or dblink_exec: a custom query declared
    destructive waits for this run's verified backup like any destructive step."""
    rb = _runbook(tmp_path / "generic.yaml", {"uses": "check.sql_assert", "name": "kill idle sessions",
                                              "destructive": True,
                                              "with": {"sql": "SELECT 1", "expect_rows": 1}})
    res = run_cli("run", "--env", str(make_env()), "--runbook", str(rb), "--engine", "local", "--json")
    assert res.returncode == 1, res.stdout + res.stderr
    report = json.loads((Path(json.loads(res.stdout)["run_dir"]) / "report.json").read_text())
    record("generic_destructive_sql", forged_inputs=1,
           trusted=int(report["failure"]["step"] != "kill idle sessions"))
    assert report["failure"]["step"] == "kill idle sessions", report["failure"]
    assert "verified backup" in report["failure"]["error"]
