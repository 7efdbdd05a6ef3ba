"""A database connection leaving the machine is encrypted by default (issue #20 point 15).

``database.sslmode`` defaulted to ``prefer``: a server without TLS got the password and every row in
clear text. Now a host off this machine defaults to ``require`` (a Unix socket or loopback address keeps
``prefer``), every run records the connection's actual transport at its start (``database.transport``:
host, loopback, tls and its version from ``pg_stat_ssl``, sslmode), and an unencrypted connection off the
machine, possible only with an explicit weaker sslmode, is a ``database.unencrypted`` deviation in the report.
Debian's PostgreSQL 15 listens on this machine's non-loopback address, first without TLS, then with it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitstop.config.data import DatabaseConfig
from tests.conftest import ROOT, free_port, run_cli
from tests.notify.conftest import _self_signed

PG = Path("/usr/lib/postgresql/15/bin")


def test_the_default_sslmode_depends_on_where_the_database_is() -> None:
    for host in ("db.example.com", "192.0.2.10", "10.0.0.5", "fd00::5"):
        assert DatabaseConfig(host=host).sslmode == "require", host
    for host in ("/run/postgresql", "localhost", "127.0.0.1", "::1"):
        assert DatabaseConfig(host=host).sslmode == "prefer", host
    assert DatabaseConfig(host="db.example.com", sslmode="prefer").sslmode == "prefer"  # explicit wins
    assert DatabaseConfig(embedded=True).sslmode == "prefer"


def _address() -> str | None:
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    for a in out:
        try:
            if ipaddress.ip_address(a).version == 4 and not ipaddress.ip_address(a).is_loopback:
                return a
        except ValueError:
            continue
    return None


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture(scope="module")
def tcp_server() -> Iterator[dict[str, Any]]:
    addr = _address()
    if addr is None or not (PG / "postgres").is_file():
        pytest.skip("needs a non-loopback IPv4 address and Debian's PostgreSQL 15")
    base = Path(tempfile.mkdtemp(prefix="pitstop-tls-"))
    base.chmod(0o755)
    data = base / "data"
    cert, key = _self_signed(base)
    if os.geteuid() == 0:
        for p in (base, cert, key):
            shutil.chown(p, "postgres", "postgres")
    key.chmod(0o600)
    subprocess.run(_as_postgres([str(PG / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"]),
                   check=True, capture_output=True)
    with (data / "pg_hba.conf").open("a") as fh:
        fh.write(f"host all all {addr}/32 trust\n")
    port = free_port()
    server = {"addr": addr, "port": port, "base": base, "data": data, "cert": cert, "key": key}

    def start(ssl: bool) -> None:
        opts = f"-p {port} -k {base} -c listen_addresses={addr} -c fsync=off -c ssl={'on' if ssl else 'off'}"
        if ssl:
            opts += f" -c ssl_cert_file={cert} -c ssl_key_file={key}"
        subprocess.run(_as_postgres([str(PG / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"), "-o", opts,
                                     "start"]), check=True, capture_output=True)

    def stop() -> None:
        subprocess.run(_as_postgres([str(PG / "pg_ctl"), "-D", str(data), "-w", "-m", "fast", "stop"]),
                       capture_output=True)

    server.update(start=start, stop=stop)
    try:
        yield server
    finally:
        stop()
        shutil.rmtree(base, ignore_errors=True)


def _run(tmp_path: Path, server: dict[str, Any], label: str, sslmode: str | None) -> tuple[Any, list[dict[str, Any]]]:
    cfg: dict[str, Any] = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg.update(name="tls", state_dir=str(tmp_path / label))
    cfg.get("schedules", {}).pop("blackouts", None)
    cfg["database"] = {"host": server["addr"], "port": server["port"], "dbname": "postgres", "user": "postgres"}
    if sslmode:
        cfg["database"]["sslmode"] = sslmode
    env = tmp_path / f"{label}.yaml"
    env.write_text(yaml.safe_dump(cfg, sort_keys=False))
    rb = tmp_path / "check.yaml"
    rb.write_text(yaml.safe_dump({"name": "check", "kind": "custom", "stages": [
        {"name": "preflight", "steps": [{"uses": "check.postgres_connect"}]}]}))
    res = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    runs = tmp_path / label / "runs"
    events: list[dict[str, Any]] = []
    if runs.is_dir():
        for d in runs.iterdir():
            if (d / "audit.jsonl").is_file():
                events += [json.loads(x) for x in (d / "audit.jsonl").read_text().splitlines()]
    return res, events


def _deviations(res: Any) -> list[str]:
    report = json.loads(Path(json.loads(res.stdout)["report"]).read_text())
    return [d["kind"] for d in report["deviations"]]


def test_tls_by_default_off_this_machine(tcp_server: dict[str, Any], tmp_path: Path) -> None:
    tcp_server["start"](ssl=False)
    try:
        refused, _ = _run(tmp_path, tcp_server, "plain-default", None)
        weak, events = _run(tmp_path, tcp_server, "plain-prefer", "prefer")
    finally:
        tcp_server["stop"]()
    # default: a server without TLS is refused rather than spoken to in clear text
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "SSL" in refused.stdout + refused.stderr and "Traceback" not in refused.stderr
    # an explicit weaker sslmode works, and the report says what travelled in clear
    assert weak.returncode == 0, weak.stdout + weak.stderr
    transport = next(e["data"] for e in events if e["kind"] == "database.transport")
    assert transport == {"host": tcp_server["addr"], "loopback": False, "tls": False, "tls_version": None,
                         "sslmode": "prefer"}
    unencrypted = next(e["data"] for e in events if e["kind"] == "database.unencrypted")
    assert unencrypted["host"] == tcp_server["addr"] and unencrypted["sslmode"] == "prefer"
    assert "database.unencrypted" in _deviations(weak)

    tcp_server["start"](ssl=True)
    try:
        ok, events = _run(tmp_path, tcp_server, "tls-default", None)
    finally:
        tcp_server["stop"]()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    transport = next(e["data"] for e in events if e["kind"] == "database.transport")
    assert transport["tls"] is True and transport["sslmode"] == "require" and transport["tls_version"]
    assert "database.unencrypted" not in _deviations(ok)
