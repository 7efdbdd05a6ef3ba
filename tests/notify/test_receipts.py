"""Every delivery can be corroborated: its recipients and the receiving side's answer are recorded.

A real run (embedded PostgreSQL, local hosts) notifies ops over SMTP (aiosmtpd with STARTTLS and AUTH), a
JSON webhook (an HTTP receiver) and a file; the audit log's ``notification`` events, report.json and the
report's notifications table name the recipients and the Message-ID / SMTP reply, the HTTP status and the
file's SHA-256, and each matches what the receiver actually got. Advance notices record the same in the
ledger.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pitstop import runner
from pitstop.notify.ledger import open_ledger
from pitstop.notify.notices import send_due

from .conftest import SMTP_PASSWORD, Receiver

WINDOW_START = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)  # the demo schedule's first Sunday window


def _events(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (run_dir / "audit.jsonl").read_text().splitlines()]
    return [e["data"] for e in rows if e["kind"] == kind]


def test_run_notifications_record_recipients_and_receipts(make_env: Any, smtp_server: dict[str, Any],
                                                          http_receiver: tuple[str, Receiver],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    addr, recv = http_receiver
    ops_url = smtp_server["url"].replace("to=customers@demo.example", "to=ops@demo.example")
    monkeypatch.setenv("OPS_MAIL_URL", ops_url)
    monkeypatch.setenv("OPS_HOOK_URL", f"json://{addr}/hook-with-a-long-token-0123456789")

    def channels(doc: dict[str, Any]) -> None:
        doc["notifications"]["channels"].update({
            "ops-mail": {"kind": "apprise", "url_env": "OPS_MAIL_URL", "audiences": ["ops"]},
            "ops-hook": {"kind": "apprise", "url_env": "OPS_HOOK_URL", "audiences": ["ops"]}})

    res = runner.execute(str(make_env(channels)), "monthly", trigger="manual", reason="receipts")
    notes = _events(res.run_dir, "notification")
    mails = [n for n in notes if n["channel"] == "ops-mail"]
    inbox = [m for _, m in smtp_server["inbox"].messages]
    assert len(mails) == len(inbox) > 3 and all(n["status"] == "sent" for n in mails)
    # the Message-ID recorded is the one the server received, once, and the server's reply is kept
    assert [n["receipt"]["message_id"] for n in mails] == [m["Message-ID"] for m in inbox]
    assert all(len(m.get_all("Message-ID")) == 1 for m in inbox)
    assert all(n["receipt"]["server_reply"] == "250 OK" for n in mails)
    assert {n["recipients"] for n in mails} == {f"email to ops@demo.example via SMTP 127.0.0.1:{smtp_server['port']}"}
    hooks = [n for n in notes if n["channel"] == "ops-hook"]
    assert len(hooks) == len(recv.bodies()) and all(n["receipt"] == {"http_status": [200]} for n in hooks)
    assert {n["recipients"] for n in hooks} == {f"json via {addr.split(':')[0]}"}
    files = [n for n in notes if n["channel"] == "ops-log"]
    lines = (res.run_dir.parents[1] / "notifications.jsonl").read_text().splitlines(keepends=True)
    assert [n["receipt"]["sha256"] for n in files] == [hashlib.sha256(x.encode()).hexdigest() for x in lines]
    assert all(n["receipt"]["path"].endswith("notifications.jsonl") for n in files)

    # stage notifications name their stage and phase: no two rows alike
    stages = [(n["stage"], n["phase"]) for n in notes if n["event"] == "stage.completed" and n["channel"] == "ops-log"]
    assert len(stages) == len(set(stages)) > 3 and all(s and p for s, p in stages)
    bodies = [m.get_body(preferencelist=("plain",)).get_content() for m in inbox]
    assert any("Stage: server-tuning (inside the maintenance window)" in b for b in bodies)
    assert any("Stage: server-tuning (before the maintenance window)" in b for b in bodies)

    report = res.report()
    assert [n["receipt"] for n in report["notifications"]] == [n["receipt"] for n in notes]
    md = (res.run_dir / "report.md").read_text()
    html = (res.run_dir / "report.html").read_text()
    for text in (md, html):
        assert inbox[0]["Message-ID"] in text.replace("&lt;", "<").replace("&gt;", ">")
        assert "server: 250 OK" in text and "HTTP 200" in text and "email to ops@demo.example" in text
    assert "(database-cleanup, window)" in md or "(server-tuning, window)" in md
    written = b"".join(p.read_bytes() for p in res.run_dir.iterdir() if p.is_file())
    assert SMTP_PASSWORD.encode() not in written and b"hook-with-a-long-token" not in written


def test_failed_delivery_names_the_server_and_keeps_no_receipt(make_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from .conftest import free_port

    port = free_port()  # nothing listens there
    monkeypatch.setenv("OPS_MAIL_URL", f"mailto://pitstop:{SMTP_PASSWORD}@127.0.0.1:{port}?to=ops@demo.example&from=maintenance@demo.example")

    def channels(doc: dict[str, Any]) -> None:
        doc["notifications"]["attempts"] = 1
        doc["notifications"]["channels"] = {"ops-mail": {"kind": "apprise", "url_env": "OPS_MAIL_URL",
                                                         "audiences": ["ops"]}}

    res = runner.execute(str(make_env(channels)), "monthly")
    report = res.report()
    assert report["status"] == "succeeded"  # a mail server down never fails the maintenance
    notes = report["notifications"]
    assert notes and all(n["status"] == "failed" and n["receipt"] is None for n in notes)
    assert f"cannot reach the SMTP server 127.0.0.1:{port}" in notes[0]["error"]
    assert any(f.startswith("Notifications not delivered: ops-mail") for f in report["follow_ups"])


def test_advance_notice_ledger_records_recipients_and_receipt(notices_env: Any, smtp_server: dict[str, Any],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTOMER_MAIL_URL", smtp_server["url"])
    cfg = notices_env({"customers-mail": {"kind": "apprise", "url_env": "CUSTOMER_MAIL_URL",
                                          "audiences": ["customers"]}})
    out = send_due(cfg, now=WINDOW_START - timedelta(hours=47))
    assert [o.status for o in out] == ["sent"]
    ledger = open_ledger(cfg)
    (key,) = ledger.keys()
    done = json.loads(ledger.store.read(f"{key}/done-0001.json"))
    (msg,) = [m for _, m in smtp_server["inbox"].messages]
    assert done["receipt"] == {"message_id": msg["Message-ID"], "server_reply": "250 OK"}
    assert done["recipients"] == f"email to customers@demo.example via SMTP 127.0.0.1:{smtp_server['port']}"


def test_a_mail_server_that_never_answers_is_not_waited_for_at_every_event(make_env: Any,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that takes the connection and never speaks costs its timeout per attempt; after one delivery
    failed every attempt, the run's progress events skip that channel (recorded as not attempted) and its
    end is tried once."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # the kernel completes the handshake; no SMTP greeting ever comes
    port = silent.getsockname()[1]
    monkeypatch.setenv("OPS_MAIL_URL", f"mailto://127.0.0.1:{port}?from=m@demo.example&to=ops@demo.example&cto=1")

    def channels(doc: dict[str, Any]) -> None:
        doc["notifications"].update(attempts=3, wait_max=0.1)
        doc["notifications"]["channels"]["ops-mail"] = {"kind": "apprise", "url_env": "OPS_MAIL_URL",
                                                        "audiences": ["ops"]}

    try:
        res = runner.execute(str(make_env(channels)), "monthly")
    finally:
        silent.close()
    report = res.report()
    assert report["status"] == "succeeded"
    mails = [n for n in report["notifications"] if n["channel"] == "ops-mail"]
    assert mails[0]["event"] == "run.started" and mails[0]["attempts"] == 3 and mails[0]["status"] == "failed"
    middle, last = mails[1:-1], mails[-1]
    assert middle and all(n["attempts"] == 0 and n["error"].startswith("not attempted: the channel failed")
                          for n in middle)
    assert last["event"] == "run.completed" and last["attempts"] == 1 and last["status"] == "failed"
    assert f"SMTP server 127.0.0.1:{port}" in last["error"]
    ops_log = [n for n in report["notifications"] if n["channel"] == "ops-log"]
    assert ops_log and all(n["status"] == "sent" for n in ops_log)  # the other channels are not affected
