"""Tamper evidence anchored outside the run folder (issue 20 #6).

Whoever can rewrite a run folder can drop events, recompute the chain, re-render and reseal: the folder
alone then verifies. The chain head published in storage at the end of the run does not move, so
``report verify --env`` names the difference; the ops notification of the run's end carries the head
of the chain as of its sending, which ``--head`` checks. Every anchor checked is listed with its
outcome; one that cannot be found is said to be unchecked, not tampered.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pitstop.audit import read_events
from pitstop.report.anchor import key
from tests.conftest import run_cli
from tests.reports.replay import rewrite_without

NO_PREFECT = {"PREFECT_API_URL": ""}  # a local run publishes no artifact: only storage and --head are anchors


def _verify(run_id: str, env: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    res = run_cli("report", "verify", run_id, "--env", str(env), "--json", *extra, env=NO_PREFECT)
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, json.loads(res.stdout)


def _ops_head(notifications: Path, run_id: str) -> str:
    """The chain head the ops end-of-run notification carried (the file channel's record)."""
    for line in notifications.read_text().splitlines():
        msg = json.loads(line)
        if msg.get("run_id") == run_id and msg.get("event") in ("run.completed", "run.failed"):
            m = re.search(r"audit chain head: event (\d+), hash ([0-9a-f]{64})", json.dumps(msg))
            assert m, msg
            return f"{m.group(1)}:{m.group(2)}"
    raise AssertionError("no end-of-run notification")


def test_a_rewritten_and_resealed_folder_is_caught_by_the_anchors(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    run_dir, run_id = Path(info["run_dir"]), info["run_id"]
    ops = _ops_head(tmp_path / "state" / "notifications.jsonl", run_id)
    n, h = ops.split(":")
    assert read_events(run_dir / "audit.jsonl")[int(n) - 1]["hash"] == h

    rc, ok = _verify(run_id, env, "--head", ops)
    assert rc == 0 and ok["ok"], ok
    assert [(a["anchor"], a["status"]) for a in ok["anchors"]] == [("storage", "matched"), ("given head", "matched")]
    assert ok["anchors_checked"] == [a["where"] for a in ok["anchors"]]

    rewrite_without(run_dir, "cleanup.purged")  # hide what the purge deleted
    assert run_cli("report", "verify", str(run_dir)).returncode == 0  # the folder alone cannot tell
    rc, bad = _verify(run_id, env, "--head", ops)
    assert rc == 1 and not bad["ok"] and "anchor" in bad["problem"], bad
    assert [(a["anchor"], a["status"]) for a in bad["anchors"]] == [("storage", "MISMATCH"),
                                                                   ("given head", "MISMATCH")]
    human = run_cli("report", "verify", run_id, "--env", str(env), env=NO_PREFECT)
    assert human.returncode == 1 and "TAMPERED" in human.stderr and "MISMATCH" in human.stderr


def test_a_missing_anchor_is_unchecked_not_tampered(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr
    run_id = json.loads(res.stdout)["run_id"]
    (tmp_path / "state" / "storage" / key("test", run_id)).unlink()
    rc, out = _verify(run_id, env)
    assert rc == 0 and out["ok"] and out["anchors"][0]["status"] == "not found" and out["anchors_checked"] == []
    human = run_cli("report", "verify", run_id, "--env", str(env), env=NO_PREFECT)
    assert human.returncode == 0 and "not found (not checked)" in " ".join(human.stdout.split())
    rc, out = _verify(run_id, env, "--require-anchor")
    assert rc == 1 and "no anchor" in out["problem"]
    assert run_cli("report", "verify", run_id, "--env", str(env), "--head", "12:nothex").returncode == 2
