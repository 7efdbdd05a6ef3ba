"""Sends run events to the audiences that want them and records every delivery in the audit log.

The executor calls ``notify(event, subject, body, severity, **data)`` at each transition. Each
channel gets the event once, rendered with the template of its audience (short for chat, full for
email) and times in that audience's timezone. A channel failure is retried (tenacity, exponential
backoff with jitter) and recorded as a ``notification`` event with its status; it never aborts the
run. The recorded delivery names the channel, never its URL.

Emergency runs: ``run.started`` goes out as ``emergency.started`` (to every emergency audience,
with the reason) and the end of the run as the ``emergency.ended`` follow-up. The notifier also
keeps the status feed current and announces an overrun (``window.extended``) once per run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from tenacity import Retrying, stop_after_attempt, wait_random_exponential

from ..audit import now_iso
from .audiences import PUBLIC_KEYS, Audience, audiences, render, routes
from .channels import Channel, Message, build_channels
from .downtime import ExpectedDowntime
from .receipts import Receipt

if TYPE_CHECKING:
    from ..config import EnvironmentConfig
    from ..runview import RunView

END_EVENTS = ("run.completed", "run.failed", "verification.failed", "run.cancelled")
# tried even on a channel that is down this run: the outcome, and what someone must act on
ALWAYS_TRIED = (*END_EVENTS, "emergency.ended", "maintenance.stuck", "window.extended", "run.skipped")


class Delivery(BaseModel):
    event: str
    channel: str
    kind: str
    audience: str
    status: str  # sent | failed
    attempts: int
    sent_at: str
    error: str | None = None
    subject: str = ""
    receipt: dict[str, Any] | None = None  # the receiver's answer: Message-ID + SMTP reply, HTTP status, file hash


def deliver(channel: Channel, msg: Message, redact: Callable[[str], str], attempts: int = 3,
            wait_max: float = 2.0, sleep: Callable[[float], None] = time.sleep) -> Delivery:
    """Send with retries; never raises. The outcome names the channel, not its URL."""
    status, error, tries, receipt = "sent", None, 0, None
    try:
        for attempt in Retrying(stop=stop_after_attempt(attempts), sleep=sleep, reraise=True,
                                wait=wait_random_exponential(multiplier=0.2, max=wait_max)):
            with attempt:
                tries += 1
                receipt = channel.send(msg)
    except Exception as exc:  # noqa: BLE001 - a channel failure never aborts maintenance
        status, error = "failed", redact(f"{type(exc).__name__}: {exc}")
    got = receipt.model_dump(exclude_none=True) if isinstance(receipt, Receipt) else None
    return Delivery(event=msg.event, channel=channel.name, kind=channel.cfg.kind, audience=msg.audience,
                    status=status, attempts=tries, sent_at=now_iso(), error=error, subject=msg.subject,
                    receipt={k: redact(v) if isinstance(v, str) else v for k, v in got.items()} if got else None)


def base_context(cfg: EnvironmentConfig, now: datetime) -> dict[str, Any]:
    n = cfg.notifications.notices
    return {"env": {"name": cfg.name, "title": n.title or cfg.name, "timezone": cfg.timezone},
            "now": now, "affects": list(n.affects), "user_actions": list(n.user_actions), "contact": n.contact,
            "impact": cfg.window.impact}


class Notifier:
    def __init__(self, ctx: RunView, channels: list[Channel] | None = None, attempts: int | None = None,
                 wait_max: float | None = None):
        self.ctx = ctx
        ncfg = ctx.cfg.notifications
        self.channels = build_channels(ctx.cfg) if channels is None else channels
        self.attempts = attempts or ncfg.attempts
        self.wait_max = ncfg.wait_max if wait_max is None else wait_max
        self._downtime: ExpectedDowntime | None = None
        self._extended = False
        self._window_opened: float | None = None
        self._feed_ok = True
        self._finished = False
        self._down: dict[str, str] = {}  # channel -> the error that made it fail every attempt, this run
        ctx.audit.subscribe(self._on_event)

    # -- public ---------------------------------------------------------------------------------------
    def notify(self, event: str, subject: str, body: str = "", severity: str = "info", internal_only: bool = False,
               only_audience: str | None = None, **data: Any) -> list[Delivery]:
        """Deliver ``event``; ``internal_only``: to internal audiences only (a run that needs no window);
        ``only_audience``: to that audience alone (an approval request goes to the approvers')."""
        context = self._context(event, subject, body, severity, data)  # status from the run event itself
        event = self._route(event)
        deliveries = []
        pairs = routes(self.ctx.cfg, self.channels, event) if only_audience is None else \
            [(ch, audiences(self.ctx.cfg)[only_audience]) for ch in self.channels if only_audience in ch.cfg.audiences]
        for channel, audience in pairs:
            if (self.ctx.options.rehearsal or internal_only) and not audience.internal:
                continue  # a rehearsal, or no window: no maintenance customers would notice, nothing to tell them
            msg = self._message(event, channel, audience, severity, context, data)
            if self.ctx.options.rehearsal:
                msg = msg.model_copy(update={"subject": f"[REHEARSAL] {msg.subject}"})
            d = self._deliver(channel, msg)
            for n in range(1, d.attempts):  # each failed attempt that was followed by another one
                self.ctx.event("retry", what="notify", channel=d.channel, event=d.event, attempt=n)
            self.ctx.event("notification", **d.model_dump(), stage=data.get("stage"), phase=data.get("phase"),
                           recipients=self.ctx.redact(channel.recipients()))
            deliveries.append(d)
        return deliveries

    @property
    def expected(self) -> ExpectedDowntime:
        if self._downtime is None:
            from .downtime import expected_downtime

            rb = self.ctx.runbook
            given = self.ctx.options.expected_downtime
            if given is not None:  # announced by the operator for this run (--expected-downtime)
                self._downtime = ExpectedDowntime(seconds=given.total_seconds(), source="operator")
            elif not rb.opens_window:  # no maintenance step: no downtime, whatever history says
                self._downtime = ExpectedDowntime(seconds=0, source="config")
            else:
                self._downtime = expected_downtime(self.ctx.cfg, rb.name, runbook_default=rb.expected_downtime)
        return self._downtime

    # -- internals ------------------------------------------------------------------------------------
    def _deliver(self, channel: Channel, msg: Message) -> Delivery:
        """A channel that failed every attempt is down for the rest of the run: a mail server that never
        answers costs its timeout per attempt (3 x 15 s) and the run waits, inside the window too. Later
        progress events are then recorded as not attempted; the run's end (and alerts) is tried once, and a
        success brings the channel back."""
        down = self._down.get(channel.name)
        if down and msg.event not in ALWAYS_TRIED:
            return Delivery(event=msg.event, channel=channel.name, kind=channel.cfg.kind, audience=msg.audience,
                            status="failed", attempts=0, sent_at=now_iso(), subject=msg.subject,
                            error=f"not attempted: the channel failed earlier in this run ({down})")
        d = deliver(channel, msg, self.ctx.redact, 1 if down else self.attempts, self.wait_max)
        if d.status == "sent":
            self._down.pop(channel.name, None)
        elif not down:
            self._down[channel.name] = (d.error or "failed")[:200]
        return d

    def _route(self, event: str) -> str:
        if self.ctx.options.trigger.value != "emergency":
            return event
        if event == "run.started":
            return "emergency.started"
        return "emergency.ended" if event in END_EVENTS else event

    def _context(self, event: str, subject: str, body: str, severity: str, data: dict[str, Any]) -> dict[str, Any]:
        ctx = self.ctx
        now = datetime.now(UTC)
        started = next((e["ts"] for e in ctx.audit.of_kind("run.started")), now.isoformat())
        expected = self.expected
        start_dt = datetime.fromisoformat(started)
        window = data.get("window") or {"start": start_dt, "label": ctx.runbook.name,
                                        "end": datetime.fromtimestamp(start_dt.timestamp() + expected.seconds, UTC)}
        status = data.get("status") or {"run.completed": "succeeded", "run.failed": "failed",
                                        "verification.failed": "failed_verification"}.get(event)
        base = base_context(ctx.cfg, now)
        if ctx.runbook.affects is not None:
            base["affects"] = list(ctx.runbook.affects)
        elif not ctx.runbook.opens_window:
            base["affects"] = []
        return {**base, **data, "subject": ctx.redact(subject), "body": ctx.redact(body),
                "severity": severity, "started_at": started, "status": status, "window": window,
                "downtime": {"seconds": expected.seconds, "source": expected.source,
                             "source_text": expected.source_text},
                "run": {"id": ctx.run_id, "runbook": ctx.runbook.name, "trigger": ctx.options.trigger.value,
                        "reason": ctx.redact(ctx.options.reason)}}

    def _message(self, event: str, channel: Channel, audience: Audience, severity: str,
                 context: dict[str, Any], data: dict[str, Any]) -> Message:
        subject, body = render(self.ctx.cfg, event, audience, channel.style, context)
        notice_id = ":".join([self.ctx.run_id, event, str(data.get("stage") or ""), str(data.get("phase") or "")])
        notice_id = notice_id.rstrip(":")
        fields = {k: v for k, v in data.items() if isinstance(v, str | int | float | bool)}
        if not audience.internal:  # the payload of a webhook or file channel: public facts only, opaque ids
            import hashlib

            notice_id = f"{self.ctx.cfg.name}:{event}:{hashlib.sha256(notice_id.encode()).hexdigest()[:16]}"
            fields = {k: v for k, v in fields.items() if k in PUBLIC_KEYS}
        return Message(event=event, run_id=self.ctx.run_id if audience.internal else "", environment=self.ctx.cfg.name,
                       severity=severity, subject=self.ctx.redact(subject), body=self.ctx.redact(body),
                       audience=audience.name, notice_id=notice_id, data=fields)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "notification":
            return
        if kind == "window.opened":  # resumed inside a window: the site has been down since an earlier attempt
            since = event["data"].get("down_since")
            self._window_opened = datetime.fromisoformat(since).timestamp() if since else time.time()
        elif kind == "window.closed":
            self._window_opened = None
        elif kind in ("stage.finished", "step.finished") and self._window_opened and not self._extended:
            elapsed = time.time() - self._window_opened
            grace = self.ctx.cfg.notifications.notices.overrun_grace.total_seconds()
            if elapsed > self.expected.seconds + grace:
                self._extended = True
                self.ctx.event("window.extended", elapsed_s=round(elapsed, 3), expected_s=self.expected.seconds)
                self.notify("window.extended", f"maintenance overrunning: {elapsed:.0f}s so far",
                            severity="warning", elapsed_s=round(elapsed, 3))
        # stage.finished is not folded in: the next stage.started (or run.finished) supersedes it.
        if kind in ("run.started", "run.resumed", "stage.started", "window.opened", "window.closed",
                    "run.finished", "window.extended", "window.decision"):
            self._update_feed(event)

    def _update_feed(self, event: dict[str, Any]) -> None:
        if not self._feed_ok or self._finished:
            return
        self._finished = event["kind"] == "run.finished"
        try:
            from .feed import record_run_event

            record_run_event(self.ctx, event, self.expected.seconds)
        except Exception as exc:  # noqa: BLE001 - a feed problem never breaks the run
            self._feed_ok = False
            self.ctx.event("feed.failed", error=self.ctx.redact(f"{type(exc).__name__}: {exc}"))
