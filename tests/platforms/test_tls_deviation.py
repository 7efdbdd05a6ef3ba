"""A database connection that leaves the machine without TLS is a deviation in the report.

A PostgreSQL 16 server (the matrix's build) listens on this machine's non-loopback address without
TLS; a run against it with ``sslmode: prefer`` succeeds, and its report lists
``database.unencrypted`` among the deviations. The same run over the Unix socket lists none.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitstop.connectors.postgres import is_loopback
from tests.conftest import ROOT, free_port, report_of, run_cli

from .conftest import BUILDS, _as_server_user


def _external_address() -> str | None:
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    for a in out:
        try:
            ip = ipaddress.ip_address(a)
        except ValueError:
            continue
        if ip.version == 4 and not ip.is_loopback:
            return a
    return None


def test_is_loopback() -> None:
    assert is_loopback("/tmp/sock") and is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("192.0.2.2") and not is_loopback("db.example.com")


def test_an_unencrypted_connection_off_this_machine_is_a_deviation(tmp_path: Path) -> None:
    addr = _external_address()
    bin_dir = BUILDS / "16" / "bin"
    if addr is None or not (bin_dir / "postgres").is_file():
        pytest.skip("needs a non-loopback IPv4 address and the PostgreSQL 16 build")
    base = Path(tempfile.mkdtemp(prefix="pitstop-tls-"))
    base.chmod(0o777)
    if os.geteuid() == 0:
        shutil.chown(base, "pitstop-pg")
    data = base / "data"
    subprocess.run(_as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                    "--no-sync"]), check=True, capture_output=True)
    subprocess.run(_as_server_user(["sh", "-c", f"echo 'host all all {addr}/32 trust' >> {data}/pg_hba.conf"]),
                   check=True)
    port = free_port()
    subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"), "-o",
                                    f"-p {port} -k {base} -c listen_addresses={addr} -c fsync=off", "start"]),
                   check=True, capture_output=True)
    try:
        cfg: dict[str, Any] = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
        cfg.update(name="tls", state_dir=str(tmp_path / "state"))
        cfg.get("schedules", {}).pop("blackouts", None)
        rb = tmp_path / "check.yaml"
        rb.write_text(yaml.safe_dump({"name": "check", "kind": "custom", "stages": [
            {"name": "preflight", "steps": [{"uses": "check.postgres_connect"}]}]}))
        kinds = {}
        for label, host in (("tcp", addr), ("socket", str(base))):
            # explicit prefer: off this machine the default is now require, which refuses a server without TLS
            cfg["database"] = {"host": host, "port": port, "dbname": "postgres", "user": "postgres",
                               "sslmode": "prefer"}
            env = tmp_path / f"{label}.yaml"
            env.write_text(yaml.safe_dump(cfg, sort_keys=False))
            res = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
            assert res.returncode == 0, res.stdout + res.stderr
            kinds[label] = [d["kind"] for d in report_of(res.stdout)["deviations"]]
        assert "database.unencrypted" in kinds["tcp"]
        assert "database.unencrypted" not in kinds["socket"]
    finally:
        subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
