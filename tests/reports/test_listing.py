"""Ids an operator copies are never cut: `report list` and `backups list` at 80 columns and piped."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize("columns", ["80", "140"])
def test_listings_never_cut_ids(make_env: Any, columns: str) -> None:
    env = make_env()
    res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr
    run_id = json.loads(res.stdout)["run_id"]
    for args in (["report", "list"], ["backups", "list"]):
        out = run_cli(*args, "--env", str(env), env={"COLUMNS": columns})
        assert out.returncode == 0, out.stderr
        assert run_id in out.stdout, out.stdout
        assert "…" not in out.stdout, out.stdout


def test_the_report_says_who_started_the_run_where_and_with_which_files(make_env: Any) -> None:
    import getpass
    import hashlib
    import socket
    from pathlib import Path

    from tests.conftest import report_of

    env = make_env()
    res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr
    report = report_of(res.stdout)
    pv = report["provenance"]
    assert pv["user"] == getpass.getuser() and pv["host"] == socket.gethostname() and pv["pitstop_version"]
    assert pv["config"]["sha256"] == hashlib.sha256(Path(env).read_bytes()).hexdigest()
    assert pv["runbook"]["path"].endswith("runbooks/monthly.yaml")
    run_dir = Path(json.loads(res.stdout)["run_dir"])
    for name in ("report.md", "report.html"):
        text = (run_dir / name).read_text()
        assert pv["config"]["sha256"] in text and pv["host"] in text
