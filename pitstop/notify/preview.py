"""``pitstop notify preview EVENT``: what each audience of each channel would receive, rendered with the
environment's real templates and a sample run (nothing is sent). Also the contract the template test
checks: every built-in template, style and event renders a non-empty subject and body."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..config import EnvironmentConfig
from .audiences import Audience, render, routes
from .notifier import base_context

if TYPE_CHECKING:
    from .channels import SecretReader

EVENTS = ["notice.advance", "window.cancelled", "window.rescheduled", "run.started", "stage.completed",
          "stage.failed", "run.completed", "run.failed", "verification.failed", "run.resumed", "maintenance.stuck",
          "window.extended", "emergency.started", "emergency.ended", "run.abandoned"]


def sample_context(cfg: EnvironmentConfig, event: str) -> dict[str, Any]:
    """A plausible context for ``event``: the variables templates may use (docs/notifications.md)."""
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = now + timedelta(days=2), now + timedelta(days=2, hours=2)
    failing = event in ("stage.failed", "run.failed", "verification.failed", "maintenance.stuck", "emergency.ended")
    return {**base_context(cfg, now),
            "subject": f"sample {event}", "body": "failed step: purge expired rows (database-cleanup): lock timeout"
            if failing else "stage database-cleanup: 2/2 steps ok",
            "severity": "failure" if failing else "info", "started_at": now.isoformat(),
            "status": "failed" if failing else "succeeded", "stage": "database-cleanup",
            "window": {"start": start, "end": end, "label": "monthly", "id": "monthly_sample"},
            "next_window": {"start": start + timedelta(days=7), "end": end + timedelta(days=7)},
            "reason": "sample reason", "elapsed_s": 780.0, "downtime": {"seconds": 600.0, "source": "config",
                                                    "source_text": "planned estimate"},
            "notice": {"id": "monthly_sample__advance-48h", "lead": "48 hours", "late": False},
            "run": {"id": "20261204T020000Z-sample-monthly-000000", "runbook": "monthly", "trigger": "manual",
                    "reason": "sample reason"}}


def render_for(cfg: EnvironmentConfig, event: str, audience: Audience, style: str) -> tuple[str, str]:
    return render(cfg, event, audience, style, sample_context(cfg, event))


def preview(cfg: EnvironmentConfig, event: str, channel: str | None = None,
            read_secret: SecretReader | None = None) -> list[dict[str, str]]:
    """``read_secret``: how the channels' Prefect Secret blocks are read (a channel's style may depend on its URL)."""
    from .channels import build_channels

    chans = [c for c in build_channels(cfg, read_secret) if channel is None or c.name == channel]
    out = []
    for ch, aud in routes(cfg, chans, event):
        subject, body = render_for(cfg, event, aud, ch.style)
        out.append({"channel": ch.name, "audience": aud.name, "style": ch.style, "subject": subject, "body": body})
    return out
