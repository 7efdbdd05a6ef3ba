"""Customers get plain language, ops keep the detail (issue #20 point 13).

Customers' emergency notices used to carry internal step names and error text. A non-internal audience
(every one but ``ops``, unless ``internal: true``) now renders from an allow-list of public facts: what is
affected, when, the expected downtime and the outcome in words. Checked on the emails a real SMTP server
(aiosmtpd) receives per audience after a failing emergency run, and over every built-in template, style
and event with internal canaries in the context.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitstop.config import load_config
from pitstop.notify.audiences import audiences, render
from tests.conftest import run_cli

INTERNAL = ["restart-app-xyz", "kaboom-internal", "app-1", "web-1", "server-tuning", "host.command",
            "exit 4", "/var at 97%"]


def _text(msg: EmailMessage) -> str:
    parts = [str(msg["Subject"]), str(msg.get("X-Pitstop-Notice-Id", ""))]
    parts += [p.get_content() for p in msg.walk() if p.get_content_type() == "text/plain"]
    return "\n".join(parts)


def test_emergency_emails_per_audience(make_env: Any, tmp_path: Path, smtp_server: dict[str, Any],
                                       monkeypatch: Any) -> None:
    base = smtp_server["url"].split("&to=")[0]
    monkeypatch.setenv("OPS_MAIL_URL", f"{base}&to=ops@demo.example")
    monkeypatch.setenv("CUSTOMERS_MAIL_URL", f"{base}&to=customers@demo.example")

    def channels(cfg: dict[str, Any]) -> None:
        cfg["notifications"]["channels"] = {
            "ops-mail": {"kind": "apprise", "url_env": "OPS_MAIL_URL", "audiences": ["ops"]},
            "customers-mail": {"kind": "apprise", "url_env": "CUSTOMERS_MAIL_URL", "audiences": ["customers"]}}

    env = make_env(channels)
    rb = tmp_path / "broken.yaml"
    rb.write_text(yaml.safe_dump({"name": "broken", "kind": "emergency", "stages": [
        {"name": "server-tuning", "steps": [
            {"uses": "host.command", "destructive": False, "name": "restart-app-xyz", "targets": "app",
             "with": {"argv": ["sh", "-c", "echo kaboom-internal on app-1 >&2; exit 4"]}}]}]}))
    res = run_cli("emergency", "--env", str(env), "--runbook", str(rb), "--reason", "web-1 /var at 97%",
                  "--expected-downtime", "15m", "--engine", "local", "--json")
    assert res.returncode == 1, res.stdout + res.stderr
    run_id = res.stdout and __import__("json").loads(res.stdout)["run_id"]

    by_rcpt: dict[str, list[EmailMessage]] = {}
    for rcpts, msg in smtp_server["inbox"].messages:
        for r in rcpts:
            by_rcpt.setdefault(r, []).append(msg)
    customers, ops = by_rcpt.get("customers@demo.example", []), by_rcpt.get("ops@demo.example", [])
    assert [m["Subject"] for m in customers] == ["Emergency maintenance of Demo Shop has started",
                                                 "Emergency maintenance of Demo Shop is finished, with problems"]
    text = "\n".join(_text(m) for m in customers)
    leaked = [w for w in [*INTERNAL, run_id] if w in text]
    assert leaked == [], leaked
    assert "Expected downtime: 15 min" in text and "Affected: " in text
    assert "our team is working on it" in text

    feed = (tmp_path / "state" / "status" / "status.json").read_text()  # the public status feed
    assert [w for w in INTERNAL if w in feed] == [] and "emergency" in feed

    ops_text = "\n".join(_text(m) for m in ops)
    for detail in ("restart-app-xyz", "kaboom-internal", "web-1 /var at 97%"):
        assert detail in ops_text, detail  # ops keep the detail


CANARIES = {"subject": "SUBJ-canary", "body": "BODY-canary", "failure": {"step": "STEP-canary", "error": "ERR-canary"},
            "stage": "STAGE-canary", "step": "STEP-canary", "host": "HOST-canary", "hosts": ["HOST-canary"],
            "error": "ERR-canary", "stderr_tail": "ERR-canary"}
EVENTS = ["notice.advance", "window.cancelled", "window.rescheduled", "window.extended", "window.exceeded",
          "run.started", "run.completed", "run.failed", "run.resumed", "run.skipped", "stage.completed",
          "stage.failed", "verification.failed", "maintenance.stuck", "emergency.started", "emergency.ended"]


@pytest.mark.parametrize("style", ["full", "short"])
@pytest.mark.parametrize("event", EVENTS)
def test_no_template_shows_internal_detail_to_customers(style: str, event: str) -> None:
    cfg = load_config("demo")
    now = datetime(2026, 12, 6, 1, 5, tzinfo=UTC)
    window = {"start": now, "end": now, "label": "monthly maintenance", "id": "w", "schedule": "monthly"}
    context = {"env": {"name": "demo", "title": "Demo Shop", "timezone": "UTC"}, "now": now, "affects": ["sign-in"],
               "user_actions": [], "contact": "support@demo.example", "impact": "", "severity": "failure",
               "started_at": now.isoformat(), "status": "failed", "window": window, "elapsed_s": 900,
               "downtime": {"seconds": 600, "source": "config", "source_text": "planned estimate"},
               "notice": {"id": "n", "name": "advance-48h", "lead": "48-hour", "late": False},
               "next_window": {"start": now, "end": now},
               "run": {"id": "RUNID-canary", "runbook": "monthly", "trigger": "emergency", "reason": "REASON-canary"},
               **CANARIES}
    auds = audiences(cfg)
    subject, body = render(cfg, event, auds["customers"], style, context)
    shown = subject + "\n" + body
    assert subject.strip() and body.strip(), (subject, body)
    assert "canary" not in shown, shown
    ops_subject, ops_body = render(cfg, event, auds["ops"], style, context)
    if event.split(".")[0] in ("run", "stage", "verification", "maintenance"):
        assert "canary" in ops_subject + ops_body  # the ops audience keeps internal detail
