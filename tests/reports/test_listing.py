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
