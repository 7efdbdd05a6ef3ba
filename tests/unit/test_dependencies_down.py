"""No command prints a Python traceback when a dependency is down: one line naming the service.

Each command of the CLI that touches the database or storage is run with the PostgreSQL server and
then the S3 endpoint unreachable (a closed port on loopback). Exit codes stay meaningful (1 for a
failure, 2 for bad input, 3 for a held lock, 0 when the command did not need the service).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, run_cli

COMMANDS = [
    ["plan", "--runbook", "monthly"],
    ["run", "--runbook", "monthly", "--engine", "local"],
    ["backups", "list"],
    ["backups", "prune", "--dry-run"],
    ["restore", "--run", "20261204T000000Z-x-monthly-000000", "--into", "restored_x"],
    ["report", "list"],
    ["notices", "plan"],
    ["maintenance", "status"],
    ["hosts", "list"],
]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: connections are refused


def _env(tmp_path: Path, down: str) -> Path:
    cfg: dict[str, Any] = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg.update(name="down", state_dir=str(tmp_path / "state"))
    cfg.get("schedules", {}).pop("blackouts", None)
    if down == "database":
        cfg["database"] = {"host": "127.0.0.1", "port": _closed_port(), "dbname": "app", "connect_timeout": 2}
    else:
        cfg["storage"] = {"kind": "s3", "bucket": "b", "endpoint_url": f"http://127.0.0.1:{_closed_port()}",
                          "region": "us-east-1", "access_key_env": "PITSTOP_DOWN_KEY",
                          "secret_key_env": "PITSTOP_DOWN_KEY"}
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.parametrize("down", ["database", "s3"])
def test_every_command_with_a_dependency_down_says_so_in_one_line(tmp_path: Path, down: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    env = _env(tmp_path, down)
    problems = []
    with ThreadPoolExecutor(4) as pool:  # independent commands (each retries a while before it says so)
        results = list(pool.map(lambda cmd: run_cli(*cmd, "--env", str(env), env={"PITSTOP_DOWN_KEY": "k" * 20},
                                                    timeout=180), COMMANDS))
    for cmd, res in zip(COMMANDS, results, strict=True):
        text = res.stdout + res.stderr
        if "Traceback" in text or res.returncode not in (0, 1, 2, 3):
            problems.append(f"{' '.join(cmd)}: exit {res.returncode}\n{text[-1500:]}")
        elif res.returncode == 1 and not any(w in text for w in ("PostgreSQL", "S3", "postgres", "database",
                                                                  "storage", "connect")):
            problems.append(f"{' '.join(cmd)}: the error does not name the service:\n{res.stderr[-500:]}")
    assert problems == [], "\n\n".join(problems)
