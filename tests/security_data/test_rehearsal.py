"""A rehearsal time never becomes an audit fact (issue #20 point 10).

``notices send-due --now 2026-12-04T02:05`` used to send real emails written for another moment and record
the notice as sent at the pretended time, which ``notices plan`` then reported. Now ``--now`` is a
rehearsal: it shows what would be sent then, rendered per channel, and sends and records nothing, so the
real notice still goes out at the real time. Checked with a real SMTP server (aiosmtpd, STARTTLS + AUTH).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.conftest import run_cli
from tests.notify.conftest import due_now

T = "2026-12-04T02:05:00+00:00"  # 47 h before the demo's 6 Dec window: its 48 h notice is due then


def _mail_env(notices_env: Any, smtp_server: dict[str, Any], monkeypatch: Any, mutate: Any = None) -> Any:
    monkeypatch.setenv("REHEARSAL_MAIL_URL", smtp_server["url"])
    return notices_env({"mail": {"kind": "apprise", "url_env": "REHEARSAL_MAIL_URL", "audiences": ["customers"]}},
                       mutate)


def _ledger_records(state: Path) -> list[Path]:
    root = state / "notices" / "ledger"
    return [p for p in root.rglob("*.json")] if root.exists() else []


def test_send_due_with_now_is_a_preview(notices_env: Any, smtp_server: dict[str, Any], monkeypatch: Any,
                                        tmp_path: Path) -> None:
    cfg = _mail_env(notices_env, smtp_server, monkeypatch)
    res = run_cli("notices", "send-due", "--env", cfg.source, "--now", T, "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [(r["notice"], r["status"], r["audience"]) for r in rows] == [("advance-48h", "preview", "customers")]
    assert rows[0]["subject"].startswith("Scheduled maintenance of Demo Shop")
    human = run_cli("notices", "send-due", "--env", cfg.source, "--now", T)
    assert human.returncode == 0 and "nothing is sent or recorded" in human.stdout
    assert "would send advance-48h" in human.stdout

    assert smtp_server["inbox"].messages == []  # no email
    assert _ledger_records(tmp_path / "state") == []  # no claim, no send record
    assert not (tmp_path / "state" / "status").exists()  # the public status feed is untouched
    plan = json.loads(run_cli("notices", "plan", "--env", cfg.source, "--now", T, "--json").stdout)
    row = next(r for r in plan if r["notice"] == "advance-48h")
    assert row["state"] == "due" and row["sent_at"] is None  # still to be sent, at the real time


def test_the_real_send_records_the_real_time(notices_env: Any, smtp_server: dict[str, Any], monkeypatch: Any,
                                             tmp_path: Path) -> None:
    window: list[str] = []
    cfg = _mail_env(notices_env, smtp_server, monkeypatch, lambda d: window.append(due_now(d)))
    before = datetime.now(UTC)
    rehearsal = run_cli("notices", "send-due", "--env", cfg.source, "--now", before.isoformat(), "--json")
    assert [r["status"] for r in json.loads(rehearsal.stdout)] == ["preview"] and not smtp_server["inbox"].messages
    res = run_cli("notices", "send-due", "--env", cfg.source, "--json")
    assert res.returncode == 0, res.stderr
    assert [r["status"] for r in json.loads(res.stdout)] == ["sent"]
    assert len(smtp_server["inbox"].messages) == 1
    plan = json.loads(run_cli("notices", "plan", "--env", cfg.source, "--json").stdout)
    row = next(r for r in plan if r["notice"] == "advance-48h")
    sent_at = datetime.fromisoformat(row["sent_at"])
    assert row["state"] == "sent" and 0 <= (sent_at - before).total_seconds() < 300
    done = [json.loads(p.read_text()) for p in _ledger_records(tmp_path / "state") if p.name.startswith("done-")]
    assert len(done) == 1 and "simulated_at" not in done[0]


def test_the_notices_flow_with_now_is_a_preview(notices_env: Any, smtp_server: dict[str, Any], monkeypatch: Any,
                                                tmp_path: Path) -> None:
    from pitstop.prefect_adapter import notices

    cfg = _mail_env(notices_env, smtp_server, monkeypatch)
    out = notices.fn(env=cfg.source, now=T)
    assert out["rehearsal"] is True and out["sent"] == 0
    assert [r["status"] for r in out["results"]] == ["preview"]
    assert smtp_server["inbox"].messages == [] and _ledger_records(tmp_path / "state") == []
