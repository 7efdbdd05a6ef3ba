"""Shared pieces of the approval tests: a runbook with an approval, the run folder, the maintenance flags."""

from __future__ import annotations

import json
import os
import pwd
import time
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT

ME = pwd.getpwuid(os.geteuid()).pw_name


def approval_runbook(tmp_path: Path, name: str = "approved", base: str = "monthly", **approval: Any) -> Path:
    rb = yaml.safe_load((ROOT / "runbooks" / f"{base}.yaml").read_text())
    rb["name"] = name
    rb["approval"] = {"before": "maintenance-on", "approvers": [ME], "timeout": "5m", **approval}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(rb, sort_keys=False))
    return path


def events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "audit.jsonl").read_text().splitlines()]


def flags(state: Path) -> list[Path]:
    """Every maintenance flag file on the sandbox hosts (config flag_path /var/www/maintenance.flag)."""
    return sorted((state / "hosts").glob("*/var/www/maintenance.flag"))


def wait_for_request(run_root: Path, timeout: float = 180) -> Path:
    """The run folder once its ``approval.requested`` event is written (the run now waits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for audit in run_root.glob("*/audit.jsonl"):
            if any(json.loads(x)["kind"] == "approval.requested" for x in audit.read_text().splitlines()):
                return audit.parent
        time.sleep(0.2)
    raise AssertionError(f"no approval.requested under {run_root} within {timeout}s")
