"""No command prints a Python traceback when the mail server or a host is down (issue 19): one line naming
the service, its address and what to check (exit 1), or the command carries on when it does not need it.

The pattern of test_dependencies_down.py (database, S3), for the SMTP server of a mail channel and for SSH
hosts: each is a closed port on loopback. A run whose mail server is down still finishes with its report:
the notification failures are recorded, never fatal.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check(cmd: list[str], res: Any, service: str, address: str, want: tuple[int, ...]) -> str | None:
    text = res.stdout + res.stderr
    if "Traceback" in text or res.returncode not in want:
        return f"{' '.join(cmd)}: exit {res.returncode} (expected {want})\n{text[-2000:]}"
    if res.returncode == 1 and not any(service in x and address in x and "check" in x for x in text.splitlines()):
        return f"{' '.join(cmd)}: no line naming {service}, {address} and what to check:\n{text[-1500:]}"
    return None


@pytest.fixture
def smtp_down(make_env: Any) -> tuple[Path, int]:
    port = _closed_port()
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=47)).replace(second=0, microsecond=0)

    def mutate(doc: dict[str, Any]) -> None:
        n = doc["notifications"]
        n["attempts"] = 1
        n["channels"]["ops-mail"] = {"kind": "apprise", "url_env": "PITSTOP_DOWN_MAIL", "audiences": ["ops"]}
        n["channels"]["customers-mail"] = {"kind": "apprise", "url_env": "PITSTOP_DOWN_MAIL",
                                           "audiences": ["customers"]}
        doc["timezone"] = "UTC"  # a window whose 48 h notice is due now: send-due really sends
        doc["schedules"] = {"monthly": {"rrule": "FREQ=DAILY;COUNT=1", "since": start.date().isoformat(),
                                        "at": start.strftime("%H:%M"), "duration": "2h", "runbook": "monthly"}}
        for aud in n.get("audiences", {}).values():
            aud.pop("timezone", None)

    return make_env(mutate), port


def test_every_command_with_the_mail_server_down(smtp_down: tuple[Path, int]) -> None:
    env, port = smtp_down
    mail = {"PITSTOP_DOWN_MAIL": f"mailto://pitstop:not-a-real-password@127.0.0.1:{port}"
                                 f"?from=ops@demo.example&to=ops@demo.example"}
    problems = []
    for cmd, want in ((["notices", "send-due"], (1,)), (["notices", "plan"], (0,)),
                      (["notify", "preview", "run.failed"], (0,)), (["maintenance", "status"], (0,)),
                      (["report", "list"], (0,))):
        res = run_cli(*cmd, "--env", str(env), env=mail, timeout=180)
        if p := _check(cmd, res, "SMTP server", f"127.0.0.1:{port}", want):
            problems.append(p)
    # a run whose mail server is down finishes, with its report: the failures are recorded, not fatal
    res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json", env=mail,
                  timeout=300)
    if p := _check(["run"], res, "SMTP server", f"127.0.0.1:{port}", (0,)):
        problems.append(p)
    else:
        report = json.loads(Path(json.loads(res.stdout)["report"]).read_text())
        mails = [n for n in report["notifications"] if n["channel"] in ("ops-mail", "customers-mail")]
        assert report["status"] == "succeeded" and mails and all(n["status"] == "failed" for n in mails)
        assert f"cannot reach the SMTP server 127.0.0.1:{port}" in mails[0]["error"]
        assert "not-a-real-password" not in json.dumps(report)
        assert any(f.startswith("Notifications not delivered") for f in report["follow_ups"])
    assert problems == [], "\n\n".join(problems)


@pytest.fixture
def hosts_down(make_env: Any, tmp_path: Path) -> tuple[Path, int]:
    port = _closed_port()
    (tmp_path / "known_hosts").write_text("")

    def mutate(doc: dict[str, Any]) -> None:
        doc["hosts"] = {name: {"transport": "ssh", "address": "127.0.0.1", "port": port, "user": "pitstop"}
                        for name in doc["hosts"]}
        doc["ssh"] = {"known_hosts": [str(tmp_path / "known_hosts")], "connect_timeout": 2, "connect_retries": 1}

    return make_env(mutate), port


def test_every_command_with_the_hosts_down(hosts_down: tuple[Path, int]) -> None:
    env, port = hosts_down
    problems = []
    for cmd, want in ((["hosts", "list"], (0,)), (["hosts", "check"], (1,)), (["hosts", "trust", "web"], (1,)),
                      (["maintenance", "status"], (1,)), (["maintenance", "off", "--reason", "host down test"], (1,)),
                      (["plan", "--runbook", "monthly"], (0, 1)),
                      (["run", "--runbook", "monthly", "--engine", "local"], (1,))):
        res = run_cli(*cmd, "--env", str(env), timeout=300)
        if p := _check(cmd, res, "SSH", f"127.0.0.1:{port}", want):
            problems.append(p)
    assert problems == [], "\n\n".join(problems)
