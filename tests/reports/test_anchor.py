"""Tamper evidence anchored outside the run folder.

Whoever can rewrite a run folder can drop events, recompute the chain, re-render and reseal: the folder
alone then verifies. The chain head published in storage at the end of the run does not move, so
``report verify --env`` names the difference. The ops notification of the run's end carries the head.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pitstop.audit import AuditLog, read_events
from pitstop.report.writer import render_run_folder
from tests.conftest import run_cli


def _rewrite_without(run_dir: Path, drop_kind: str) -> None:
    events = read_events(run_dir / "audit.jsonl")
    for p in run_dir.iterdir():
        if p.is_file():
            p.unlink()
    log = AuditLog(run_dir / "audit.jsonl")
    kept = [e for e in events if e["kind"] != drop_kind]
    assert len(kept) < len(events)
    for ev in kept:
        log.emit(ev["kind"], **ev["data"])
    render_run_folder(run_dir)


def test_a_rewritten_and_resealed_folder_is_caught_by_the_storage_anchor(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    run_dir = Path(info["run_dir"])
    ok = run_cli("report", "verify", info["run_id"], "--env", str(env), "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["anchors_checked"], "no anchor was checked"
    ops = (tmp_path / "state" / "notifications.jsonl").read_text()
    head = read_events(run_dir / "audit.jsonl")
    assert "audit chain head" in ops and any(e["hash"] in ops for e in head)

    shutil.copytree(run_dir, tmp_path / "original")
    _rewrite_without(run_dir, "cleanup.purged")  # hide what the purge deleted
    alone = run_cli("report", "verify", str(run_dir))
    assert alone.returncode == 0, "the rewritten folder should verify on its own: the test proves nothing"
    anchored = run_cli("report", "verify", info["run_id"], "--env", str(env))
    assert anchored.returncode == 1, anchored.stdout + anchored.stderr
    assert "TAMPERED" in anchored.stderr and "anchor" in anchored.stderr


def test_an_unfinished_run_is_called_unfinished_not_tampered(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr
    done = Path(json.loads(res.stdout)["run_dir"])
    events = read_events(done / "audit.jsonl")
    cut = next(i for i, e in enumerate(events) if e["kind"] == "maintenance.on")
    killed = done.parent / "20261204T000000Z-test-monthly-killed"
    killed.mkdir()
    (killed / "audit.jsonl").write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in events[:cut + 1]))
    ver = run_cli("report", "verify", killed.name, "--env", str(env))
    assert ver.returncode == 1 and "UNFINISHED" in ver.stderr and "TAMPERED" not in ver.stderr
    assert f"pitstop resume {killed.name}" in " ".join(ver.stderr.split())
    show = run_cli("report", "show", killed.name, "--env", str(env))
    assert show.returncode == 2 and "Traceback" not in show.stderr
    assert "unfinished" in show.stderr
