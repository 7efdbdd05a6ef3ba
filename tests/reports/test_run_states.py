"""What an auditor reads is complete (issue 19) and stays inside the reports directory (issue 20 #14).

``report list`` lists every run folder with its state — succeeded, failed, failed_verification,
running, abandoned, resumed, a run that ended without a seal, an empty folder — and never cuts an id
(80 columns on a terminal, piped). ``report show`` of a run without a report says what it is and how
to finish it; ``report verify`` says "unfinished (no manifest yet)" for a run that never finished and
TAMPERED for one whose log records its end but whose manifest is gone. Run ids given with ``--env``
are ids: a path, a link out of the reports directory or a folder of the working directory that
shadows a run is never read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitstop.config import load_config
from pitstop.connectors.postgres import Database
from pitstop.locks import EnvironmentLock
from tests.conftest import cli_on_tty, run_cli
from tests.reports.conftest import Corpus
from tests.reports.replay import lines_of

ABANDONED = "20261204T030000Z-test-monthly-abandon"
RUNNING = "20261204T030100Z-test-monthly-running"
UNSEALED = "20261204T030200Z-test-monthly-unseald"
EMPTY = "20261204T030300Z-test-monthly-emptyyy"


@pytest.fixture(scope="module")
def states(corpus: Corpus) -> dict[str, Any]:
    """The corpus' runs plus folders in the states a crash leaves: a run killed inside its window
    (abandoned), one whose id holds the environment lock (running), one that finished but was never
    sealed, and an empty folder."""
    runs = corpus.runs["monthly"].parent
    lines = lines_of(corpus.runs["monthly"] / "audit.jsonl")
    cut = next(i for i, x in enumerate(lines) if json.loads(x)["kind"] == "maintenance.on") + 1
    for name, upto in ((ABANDONED, cut), (RUNNING, cut), (UNSEALED, len(lines))):
        (runs / name).mkdir()
        (runs / name / "audit.jsonl").write_text("".join(x + "\n" for x in lines[:upto]))
    (runs / EMPTY).mkdir()
    return {"env": str(corpus.env_path), "runs": runs, "corpus": corpus}


def _cli(states: dict[str, Any], *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """The CLI with the corpus environment's (canary) secrets set."""
    extra = kw.pop("env", {})
    return run_cli(*args, env={**states["corpus"].env, **extra}, **kw)


def _list(states: dict[str, Any]) -> dict[str, dict[str, Any]]:
    res = _cli(states, "report", "list", "--env", states["env"], "--json")
    assert res.returncode == 0, res.stderr
    return {r["run_id"]: r for r in json.loads(res.stdout)}


def test_report_list_names_every_run_folder_with_its_state(states: dict[str, Any],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in states["corpus"].env.items():
        monkeypatch.setenv(k, v)
    cfg = load_config(states["env"])
    lock = EnvironmentLock(Database(cfg), cfg.name, RUNNING)
    lock.acquire()
    try:
        rows = _list(states)
    finally:
        lock.release()
    folders = {p.name for p in states["runs"].iterdir() if p.is_dir()}
    assert set(rows) == folders  # every folder, those without a report too
    runs = states["corpus"].runs
    want = {runs["monthly"].name: ("succeeded", []), runs["killed-and-resumed"].name: ("succeeded", ["resumed"]),
            runs["backup-verify-failed"].name: ("failed", []), runs["failed-step"].name: ("failed", []),
            runs["post-verification-failed"].name: ("failed_verification", []),
            ABANDONED: ("abandoned", []), RUNNING: ("running", []), UNSEALED: ("succeeded", ["no manifest"]),
            EMPTY: ("empty", [])}
    for run_id, (status, marks) in want.items():
        assert (rows[run_id]["status"], rows[run_id]["marks"]) == (status, marks), rows[run_id]
    assert list(rows) == sorted(rows, reverse=True)  # newest first
    # the database that holds the lock is down: open runs are "unfinished", the list still works
    cfg_dict = yaml.safe_load(Path(states["env"]).read_text())
    cfg_dict["database"] = {"host": "127.0.0.1", "port": 9, "dbname": "gone", "user": "postgres"}
    broken = Path(states["env"]).with_name("env-db-down.yaml")
    broken.write_text(yaml.safe_dump(cfg_dict))
    res = _cli(states, "report", "list", "--env", str(broken), "--json")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert {r["run_id"]: r["status"] for r in json.loads(res.stdout)}[ABANDONED] == "unfinished"


@pytest.mark.parametrize("how", ["tty-80", "tty-140", "piped-80"])
def test_ids_in_report_list_are_never_cut(states: dict[str, Any], how: str) -> None:
    kind, columns = how.split("-")
    if kind == "tty":
        text = cli_on_tty("report", "list", "--env", states["env"], columns=int(columns), extra=states["corpus"].env)
    else:
        res = _cli(states, "report", "list", "--env", states["env"], env={"COLUMNS": columns})
        assert res.returncode == 0, res.stderr
        text = res.stdout
    lines = text.replace("\r", "").splitlines()
    for run_id in _list(states):
        assert any(run_id in line for line in lines), (run_id, text)  # whole, on one line
    assert "…" not in text


def test_show_and_verify_of_runs_without_a_report(states: dict[str, Any]) -> None:
    env = states["env"]
    show = _cli(states, "report", "show", ABANDONED, "--env", env)
    assert show.returncode == 2 and "Traceback" not in show.stderr, show.stderr
    said = " ".join(show.stderr.split())
    assert "unfinished" in said and f"pitstop resume {ABANDONED} --env {env}" in said
    ver = _cli(states, "report", "verify", ABANDONED, "--env", env)
    said = " ".join(ver.stderr.split())
    assert ver.returncode == 1 and "UNFINISHED" in said and "TAMPERED" not in said
    assert "unfinished (no manifest yet" in said
    assert f"pitstop resume {ABANDONED} --env {env}" in said
    # the log records the run's end and the manifest is missing: that is tampering, not an unfinished run
    ver = _cli(states, "report", "verify", UNSEALED, "--env", env)
    assert ver.returncode == 1 and "TAMPERED" in ver.stderr and "manifest.json is missing" in ver.stderr
    show = _cli(states, "report", "show", UNSEALED, "--env", env)
    assert show.returncode == 2 and "never sealed" in " ".join(show.stderr.split()), show.stderr


def test_run_ids_with_env_never_reach_outside_the_reports_directory(states: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    env, runs = states["env"], states["runs"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "report.md").write_text("# SECRET-OUTSIDE-REPORT\n")
    (outside / "report.json").write_text("{}")
    rel = os.path.relpath(outside, runs)
    for given in (rel, str(outside), "../outside", "..", ".", f"{runs.name}/../x", "-x", "a/b"):
        for cmd in ("show", "verify"):
            res = _cli(states, "report", cmd, given, "--env", env)
            assert res.returncode == 2, (cmd, given, res.stdout, res.stderr)
            assert "SECRET-OUTSIDE-REPORT" not in res.stdout and "Traceback" not in res.stderr
    link = runs / "20261204T040000Z-test-monthly-linked"
    link.symlink_to(outside)
    try:
        res = _cli(states, "report", "show", link.name, "--env", env)
        assert res.returncode == 2 and "SECRET-OUTSIDE-REPORT" not in res.stdout, res.stdout + res.stderr
    finally:
        link.unlink()
    # a folder of the working directory named like a run is not the run
    monthly = states["corpus"].runs["monthly"].name
    shadow = tmp_path / "cwd" / monthly
    shadow.mkdir(parents=True)
    shutil.copy(outside / "report.md", shadow / "report.md")
    (shadow / "report.json").write_text("{}")
    res = _cli(states, "report", "show", monthly, "--env", env, cwd=tmp_path / "cwd")
    assert res.returncode == 0 and "SECRET-OUTSIDE-REPORT" not in res.stdout, res.stdout + res.stderr
    assert monthly in res.stdout
