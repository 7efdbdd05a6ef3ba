"""Sends run events to every channel and records each delivery in the audit log.

A channel failure is retried (tenacity, backoff with jitter) and recorded; it never aborts the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tenacity import Retrying, stop_after_attempt, wait_random_exponential

from ..audit import now_iso
from .channels import Channel, Message, build_channels

if TYPE_CHECKING:
    from ..context import RunContext


class Notifier:
    def __init__(self, ctx: RunContext, channels: list[Channel] | None = None, attempts: int = 3,
                 wait_max: float = 2.0):
        self.ctx = ctx
        self.channels = build_channels(ctx.cfg) if channels is None else channels
        self.attempts = attempts
        self.wait_max = wait_max

    def notify(self, event: str, subject: str, body: str = "", severity: str = "info", **data: Any) -> None:
        prefix = f"[pitstop {self.ctx.cfg.name}] "
        msg = Message(event=event, run_id=self.ctx.run_id, environment=self.ctx.cfg.name, severity=severity,
                      subject=self.ctx.redact(prefix + subject), body=self.ctx.redact(body), data=data)
        for channel in self.channels:
            status, error, attempts = "sent", None, 0
            try:
                for attempt in Retrying(stop=stop_after_attempt(self.attempts),
                                        wait=wait_random_exponential(multiplier=0.2, max=self.wait_max),
                                        reraise=True):
                    with attempt:
                        attempts += 1
                        channel.send(msg)
            except Exception as exc:  # noqa: BLE001 - a channel failure never aborts maintenance
                status, error = "failed", self.ctx.redact(f"{type(exc).__name__}: {exc}")
            self.ctx.event("notification", event=event, channel=channel.name, kind=channel.cfg.kind,
                           status=status, sent_at=now_iso(), attempts=attempts, error=error,
                           subject=msg.subject)
