"""Shared by the operator tests: a runbook that waits inside its window, the state dir, the run folder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT

WAIT_FOR_RELEASE = ["sh", "-c", "while [ ! -f release ]; do sleep 0.1; done"]


def blocking_runbook(tmp_path: Path) -> Path:
    """The monthly runbook plus an in-window step that waits until ``hosts/app-1/release`` exists."""
    rb = yaml.safe_load((ROOT / "runbooks" / "monthly.yaml").read_text())
    tuning = next(s for s in rb["stages"] if s["name"] == "server-tuning")
    tuning["steps"].append({"uses": "host.command", "destructive": False, "name": "wait for release", "targets": "app",
                            "with": {"argv": WAIT_FOR_RELEASE}})
    path = tmp_path / "blocking.yaml"
    path.write_text(yaml.safe_dump(rb, sort_keys=False))
    return path


def state_dir(env: Path) -> Path:
    return Path(yaml.safe_load(env.read_text())["state_dir"])


def release(env: Path) -> None:
    (state_dir(env) / "hosts" / "app-1" / "release").touch()


def wait_for_event(run_root: Path, kind: str, step: str | None = None, timeout: float = 180) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for audit in run_root.glob("*/audit.jsonl"):
            for line in audit.read_text().splitlines():
                ev = json.loads(line)
                if ev["kind"] == kind and (step is None or ev["data"].get("step") == step):
                    return audit.parent
        time.sleep(0.1)
    raise AssertionError(f"no {kind} event for {step} within {timeout}s")


def only_run(state: Path) -> Path:
    runs = [p for p in (state / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "audit.jsonl").read_text().splitlines()]


def assert_complete_success(run_dir: Path, customers: Path) -> dict[str, Any]:
    """report.json says succeeded, maintenance-off ran ok, the folder verifies, customers got no failure."""
    from pitstop.report.verify import verify_run_dir

    report: dict[str, Any] = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "succeeded" and report["failure"] is None, report["failure"]
    off = [st for s in report["stages"] if s["name"] == "maintenance-off" for st in s["steps"]]
    assert off and all(st["status"] == "succeeded" for st in off), off
    assert verify_run_dir(run_dir) is None
    sent = customers.read_text() if customers.exists() else ""
    assert "run.failed" not in sent and "ended with problems" not in sent
    return report
