"""A run whose report cannot be written (the run folder's filesystem is full) ends with one line, not a
traceback: its outcome, why the report is missing, a copy of the report written elsewhere and the command
that writes it once there is room (exit 1). The run itself finished: maintenance was lifted and the audit
log records it; ``resume`` then writes the report into the run folder.

The reports directory is a real tmpfs of 1 MiB (root only); the runbook's last step fills it to within
48 KiB, which still takes the run's last events but not report.json.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import run_cli


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def _runbook(tmp_path: Path, fs: Path) -> Path:
    fill = (f"avail=$(df -k --output=avail {fs} | tail -1); "
            f"head -c $(( (avail - 48) * 1024 )) /dev/zero > {fs}/fill")
    rb = {"name": "fill", "kind": "custom", "stages": [
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on"}]},
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off"}]},
        {"name": "post-verification", "steps": [{"uses": "host.command", "name": "fill the reports disk",
                                                 "targets": "app", "destructive": False,
                                                 "with": {"argv": ["sh", "-c", fill]}}]}]}
    path = tmp_path / "fill.yaml"
    path.write_text(yaml.safe_dump(rb, sort_keys=False))
    return path


@pytest.mark.parametrize("as_json", [False, True])
def test_a_report_the_disk_refuses_is_one_line_with_a_copy(make_env: Any, tmp_path: Path, tiny_fs: Path,
                                                           as_json: bool) -> None:
    env = make_env(lambda d: d.update(reports={"dir": str(tiny_fs)}))
    res = run_cli("run", "--env", str(env), "--runbook", str(_runbook(tmp_path, tiny_fs)), "--engine", "local",
                  *(["--json"] if as_json else []))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    (run_dir,) = [p for p in tiny_fs.iterdir() if p.is_dir()]
    if as_json:
        info = json.loads(res.stdout)
        assert info["status"] == "succeeded" and info["report"] is None and info["run_dir"] == str(run_dir)
        why, copy = info["report_error"], Path(info["fallback_report"])
    else:
        (line,) = [x for x in res.stderr.splitlines() if x.startswith("error:")]
        assert f"run {run_dir.name} ended (succeeded) but its report could not be written" in line
        assert f"pitstop resume {run_dir.name} --env {env}" in line
        why = line
        copy = Path(line.split("a copy of the report: ")[1].split(";")[0])
    assert "No space left on device" in why
    assert copy.is_file() and "succeeded" in copy.read_text() and run_dir.name in copy.read_text()
    assert oct(copy.parent.stat().st_mode & 0o777) == "0o700"

    # the run finished and lifted maintenance; no half-written report stayed behind
    events = [json.loads(x) for x in (run_dir / "audit.jsonl").read_text().splitlines()]
    kinds = [e["kind"] for e in events]
    assert "run.finished" in kinds and kinds[-1] == "report.failed"
    assert not any((run_dir / n).exists() for n in ("report.json", "report.md", "report.html", "manifest.json"))
    off = [e["data"] for e in events if e["kind"] == "step.finished" and e["data"].get("uses") == "maintenance.off"]
    assert off and all(d["status"] == "succeeded" for d in off)

    # once there is room, resume writes the report into the run folder
    (tiny_fs / "fill").unlink()
    res = run_cli("resume", run_dir.name, "--env", str(env), "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads((run_dir / "report.json").read_text())["status"] == "succeeded"
    assert run_cli("report", "verify", str(run_dir)).returncode == 0
