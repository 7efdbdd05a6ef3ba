"""Every command says first which config and runbook files it loaded (issue #20 point 16).

``./config`` in the working directory is searched before the project's ``config/``: a stray copy there
silently replaced the real environment. Every command that reads a config now prints, as its first line
on stderr, the absolute path it loaded and the file it shadows; likewise for runbooks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, demo_config, run_cli

COMMANDS = [
    ["validate", "--env", "demo", "--runbook", "check"],
    ["plan", "--env", "demo", "--runbook", "check", "--json"],
    ["run", "--env", "demo", "--runbook", "check", "--engine", "local", "--json"],
    ["notices", "plan", "--env", "demo", "--json"],
    ["notices", "send-due", "--env", "demo", "--now", "2026-12-04T02:05:00+00:00", "--json"],
    ["notify", "preview", "run.failed", "--env", "demo", "--json"],
    ["report", "list", "--env", "demo"],
    ["report", "show", "no-such-run", "--env", "demo"],
    ["backups", "list", "--env", "demo"],
    ["restore", "--env", "demo", "--run", "no-such-run", "--into", "restored_x"],
    ["resume", "no-such-run", "--env", "demo", "--engine", "local"],
    ["hosts", "list", "--env", "demo"],
    ["maintenance", "status", "--env", "demo"],
    ["deploy", "--env", "demo", "--dry-run"],
]


@pytest.fixture(scope="module")
def shadowing_cwd(tmp_path_factory: pytest.TempPathFactory, pg_data_dir: Path) -> Path:
    """A working directory whose ./config/demo.yaml shadows the project's (it points at the test database)."""
    from pitstop.config import load_config
    from pitstop.demo import setup_hosts

    cwd = tmp_path_factory.mktemp("cwd")
    (cwd / "config").mkdir()
    (cwd / "runbooks").mkdir()
    cfg = demo_config(cwd / "state", pg_data_dir, "postgres")
    cfg["name"] = "demo"
    (cwd / "config" / "demo.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (cwd / "runbooks" / "check.yaml").write_text(yaml.safe_dump({"name": "check", "kind": "custom", "stages": [
        {"name": "preflight", "steps": [{"uses": "check.postgres_connect"}]}]}))
    setup_hosts(load_config(str(cwd / "config" / "demo.yaml")))
    return cwd


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a[:2]) for a in COMMANDS])
def test_the_first_line_names_the_config_and_what_it_shadows(shadowing_cwd: Path, args: list[str]) -> None:
    res = run_cli(*args, cwd=shadowing_cwd)
    lines = res.stderr.splitlines()
    assert lines, (res.returncode, res.stdout[-500:])
    config = (shadowing_cwd / "config" / "demo.yaml").resolve()
    assert lines[0] == f"config: {config} (shadows {(ROOT / 'config' / 'demo.yaml').resolve()})", res.stderr[-800:]
    if "--runbook" in args:
        assert lines[1] == f"runbook: {(shadowing_cwd / 'runbooks' / 'check.yaml').resolve()}"
    assert "Traceback" not in res.stderr


def test_no_shadow_no_note(tmp_path: Path) -> None:
    res = run_cli("validate", "--env", "demo", "--runbook", "monthly", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines()[:2] == [f"config: {(ROOT / 'config' / 'demo.yaml').resolve()}",
                                           f"runbook: {(ROOT / 'runbooks' / 'monthly.yaml').resolve()}"]


def test_a_path_with_markup_characters_is_printed_as_is(tmp_path: Path, make_env: Any) -> None:
    env = make_env(name="[bold]env.yaml")
    res = run_cli("validate", "--env", str(env), cwd=tmp_path)
    assert res.stderr.splitlines()[0] == f"config: {env.resolve()}", res.stderr
