"""Files a run writes are not readable by other local users, whatever the umask.

A real monthly run through the CLI (local engine, local storage) under umask 000, 022 and 077: every
file and directory pitstop created under the state directory — run folder, reports, audit log,
manifest, dumps, row archives, report copies in storage, notification ledgers — has no group or other
permission bits. Excluded, with reason: ``hosts/`` (the demo's sandboxed *host* filesystems: their
files belong to the hosts, and log rotation keeps each file's own mode).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.reliability.results import record


@pytest.mark.parametrize("umask", ["000", "022", "077"])
def test_a_runs_files_are_private_under_any_umask(make_env: Any, tmp_path: Path, umask: str) -> None:
    import subprocess

    def mutate(cfg: dict[str, Any]) -> None:
        cfg["retention"][0]["archive"] = True

    env = make_env(mutate)
    cmd = f"umask {umask}; exec {sys.executable} -m pitstop.cli run --env {env} --runbook monthly --engine local --json"
    res = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "COLUMNS": "200"}, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    state = tmp_path / "state"
    report = json.loads((Path(json.loads(res.stdout)["run_dir"]) / "report.json").read_text())
    assert report["backup"]["location"], "no dump was written: the check proves little"
    checked, exposed = 0, []
    for p in state.rglob("*"):  # the state directory itself was made by the fixture, before the run
        rel = p.relative_to(state)
        if rel.parts[:1] == ("hosts",):
            continue
        checked += 1
        if stat.S_IMODE(p.lstat().st_mode) & 0o077:
            exposed.append(f"{rel} {oct(stat.S_IMODE(p.lstat().st_mode))}")
    assert any(p.suffix == ".gz" for p in state.rglob("*")), "no row archive was written"
    record("file_modes", modes_checked=checked, world_readable=len(exposed))
    assert exposed == [], exposed
