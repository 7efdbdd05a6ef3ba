"""Advance notices delivered to real peers: an SMTP server (STARTTLS + AUTH) and an HTTP receiver
reached through apprise's json:// scheme. An injected clock walks the days before a window."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from icalendar import Calendar

from pitstop.notify.ledger import open_ledger
from pitstop.notify.notices import plan_notices, send_due
from pitstop.schedule import upcoming_windows

from .conftest import SMTP_PASSWORD, all_written_bytes

NO_SLEEP = lambda s: None  # noqa: E731 - tenacity's injectable sleep: retries without waiting

# monthly@20261206T010000Z: Sunday 6 Dec 2026 02:00 Europe/Berlin (01:00 UTC)
WINDOW_START = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)


def walk(cfg: Any, moments: list[datetime], **kw: Any) -> dict[datetime, list[Any]]:
    return {t: send_due(cfg, t, clock=lambda t=t: t, sleep=NO_SLEEP, **kw) for t in moments}


def test_email_notices_over_smtp_with_ics(notices_env: Any, smtp_server: dict[str, Any], monkeypatch: Any) -> None:
    monkeypatch.setenv("CUSTOMER_MAIL_URL", smtp_server["url"])
    cfg = notices_env({"customers-mail": {"kind": "apprise", "url_env": "CUSTOMER_MAIL_URL",
                                          "audiences": ["customers"]}})
    s = WINDOW_START
    moments = [s - timedelta(days=9), s - timedelta(days=7) + timedelta(minutes=5),
               s - timedelta(days=6), s - timedelta(hours=47), s - timedelta(hours=23), s - timedelta(hours=22)]
    results = walk(cfg, moments)
    sent = {t: [r.notice for r in rs if r.status == "sent"] for t, rs in results.items()}
    assert list(sent.values()) == [[], ["advance-7d"], [], ["advance-48h"], ["advance-24h"], []]

    inbox = smtp_server["inbox"].messages
    assert len(inbox) == 3
    rcpts, msg = inbox[1]
    assert rcpts == ["customers@demo.example"]
    assert msg["Subject"] == "Scheduled maintenance of Demo Shop: Saturday 05 December 2026, 20:00 EST"
    assert msg["X-Pitstop-Notice-Id"] == "monthly_20261206T010000Z__advance-48h__customers-mail"
    text = msg.get_body(preferencelist=("plain", "html")).get_content()
    assert "Starts: Saturday 05 December 2026, 20:00 EST" in text      # customers read New York time
    assert "Expected downtime: 5 min (planned estimate)" in text
    assert "sign-in" in text and "log out before the window" in text
    assert "48-hour notice" in text

    ics = [p for p in msg.iter_attachments() if p.get_filename() == "maintenance.ics"]
    assert len(ics) == 1
    cal = Calendar.from_ical(ics[0].get_payload(decode=True))
    ev = next(iter(cal.walk("VEVENT")))
    window = upcoming_windows(cfg, s - timedelta(hours=1), s + timedelta(hours=1))[0]
    assert ev.decoded("dtstart") == window.start and ev.decoded("dtend") == window.end
    assert str(ev["uid"]) == "monthly@20261206T010000Z.shop@pitstop"
    assert str(cal["method"]) == "PUBLISH"

    # the SMTP password (in the URL env var) is in no file pitstop wrote
    written = all_written_bytes(cfg.state_path)
    assert SMTP_PASSWORD.encode() not in written and b"mailtos://" not in written
    ledger = open_ledger(cfg)
    assert {k.split("__")[1] for k in ledger.keys()} == {"advance-7d", "advance-48h", "advance-24h"}


def test_webhook_payloads_and_retry_after_failure(notices_env: Any, http_receiver: Any, monkeypatch: Any) -> None:
    addr, recv = http_receiver
    monkeypatch.setenv("OPS_HOOK_URL", f"json://{addr}/hooks/ops")
    monkeypatch.setenv("CHAT_HOOK_URL", f"json://{addr}/hooks/chat")
    cfg = notices_env({"ops-hook": {"kind": "apprise", "url_env": "OPS_HOOK_URL", "audiences": ["ops"]},
                       "chat": {"kind": "apprise", "url_env": "CHAT_HOOK_URL", "audiences": ["customers"]}})
    t = WINDOW_START - timedelta(hours=47)
    recv.fail_next = 6  # both channels fail all 3 attempts
    first = send_due(cfg, t, clock=lambda: t, sleep=NO_SLEEP)
    assert sorted((r.channel, r.status, r.attempts) for r in first) == [("chat", "failed", 3),
                                                                        ("ops-hook", "failed", 3)]
    assert all(r.error and OPS_SECRET_FREE(r.error, addr) for r in first)
    states = {(p.channel, p.notice): p.state for p in plan_notices(cfg, t)}
    assert states[("chat", "advance-48h")] == "due"  # a failed delivery is retried by the next send-due

    t2 = t + timedelta(hours=1)
    second = send_due(cfg, t2, clock=lambda: t2, sleep=NO_SLEEP)
    assert sorted((r.channel, r.status) for r in second) == [("chat", "sent"), ("ops-hook", "sent")]
    ok = [r for r in recv.requests if r["status"] == 200]
    by_path = {r["path"]: r for r in ok}
    chat = by_path["/hooks/chat"]
    assert chat["json"]["title"].startswith("[shop] Maintenance Sat 05 Dec 2026 20:00 EST (48-hour notice)")
    assert "expected downtime 5 min" in chat["json"]["message"]
    assert chat["headers"]["X-Pitstop-Notice-Id"] == "monthly_20261206T010000Z__advance-48h__chat"
    assert by_path["/hooks/ops"]["json"]["title"].endswith("CET (48-hour notice)")  # ops read Berlin time
    assert send_due(cfg, t2, clock=lambda: t2, sleep=NO_SLEEP) == []
    # the ledger proves each attempt: failed attempt 1, sent attempt 2
    key = "monthly_20261206T010000Z__advance-48h__chat"
    root = cfg.state_path / "notices" / "ledger" / key
    assert json.loads((root / "done-0001.json").read_text())["status"] == "failed"
    assert json.loads((root / "done-0002.json").read_text())["status"] == "sent"


def OPS_SECRET_FREE(text: str, addr: str) -> bool:  # noqa: N802
    return "json://" not in text and "/hooks/" not in text


def test_cancelled_window_is_announced_once(notices_env: Any, http_receiver: Any, monkeypatch: Any,
                                            tmp_path: Any) -> None:
    addr, recv = http_receiver
    monkeypatch.setenv("CHAT_HOOK_URL", f"json://{addr}/hooks/chat")
    channels = {"chat": {"kind": "apprise", "url_env": "CHAT_HOOK_URL", "audiences": ["customers"]}}
    cfg = notices_env(channels)
    t = WINDOW_START - timedelta(days=6)
    assert [r.status for r in send_due(cfg, t, clock=lambda: t, sleep=NO_SLEEP)] == ["sent"]

    def blackout(doc: dict[str, Any]) -> None:
        doc["schedules"]["blackouts"].append({"date": "2026-12-06", "reason": "payment provider migration"})

    cfg2 = notices_env(channels, blackout)
    t2 = t + timedelta(hours=1)
    out = send_due(cfg2, t2, clock=lambda: t2, sleep=NO_SLEEP)
    assert [(r.notice, r.status) for r in out] == [("cancelled", "sent")]
    assert send_due(cfg2, t2, clock=lambda: t2, sleep=NO_SLEEP) == []
    last = recv.bodies()[-1]
    assert "cancelled" in last["title"] and "No new date yet" in last["message"]
