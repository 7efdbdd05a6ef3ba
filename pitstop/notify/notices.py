"""Advance notices for scheduled windows, sent exactly once, and the lead-time policy.

For each upcoming window (pitstop.schedule) and each offset in ``notifications.notices.offsets``
(default 7 d, 48 h, 24 h) a notice falls due at ``start - offset``. ``send_due`` sends, per channel
whose audience wants ``notice.advance``, the *latest* notice that is due and not yet sent: a
send-due that ran late sends the 24 h notice instead of three stale ones (the older ones show as
``superseded``). Delivery goes through the ledger (pitstop.notify.ledger), so a double trigger never
duplicates and a crash never loses a notice (at-least-once by default; see the ledger).

A window that had notices sent and then disappeared from the schedule (config change, new
blackout) gets a ``window.cancelled`` notice — or ``window.rescheduled`` with the new time when the
same schedule has another window within 45 days — once, through the same ledger.

The lead-time policy (``notices.required``/``notices.policy``): a scheduled run whose required
notice (e.g. 48 h ahead) was not delivered refuses to start (``refuse``) or starts with a recorded
warning (``warn``). Emergency runs are exempt and flagged.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..config import EnvironmentConfig
from ..errors import GateRefused, InputError
from ..schedule import Clock, Window, system_clock, upcoming_windows, window_at
from .audiences import Audience, audiences, render, routes
from .channels import Attachment, Channel, Message, build_channels
from .downtime import expected_downtime
from .ledger import KeyState, Ledger, open_ledger
from .notifier import base_context, deliver

if TYPE_CHECKING:
    from ..runview import RunView

RESCHEDULE_WITHIN = timedelta(days=45)


def parse_now(value: str | None) -> datetime:
    """``--now`` / the notices flow's ``now``: an ISO date-time (UTC when it names no zone); empty: now."""
    if not value:
        return datetime.now(UTC)
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"--now must be an ISO date-time such as 2026-12-04T09:00:00+01:00 (got {value!r})") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


class LeadTimeRefused(GateRefused):
    """A scheduled run's required advance notice was not delivered and the policy is ``refuse``."""


class PlannedNotice(BaseModel):
    key: str
    window_id: str
    schedule: str
    window_start: datetime
    window_end: datetime
    notice: str  # advance-7d | advance-48h | cancelled | rescheduled
    event: str
    due_at: datetime
    channel: str
    audience: str
    state: str  # pending | due | sent | superseded | failed | in_flight | stale | abandoned | skipped
    sent_at: str | None = None
    skipped: str | None = None


class SendOutcome(BaseModel):
    key: str
    channel: str
    notice: str
    window_id: str
    status: str  # sent | failed | not-claimed | abandoned | preview (a rehearsal: nothing sent or recorded)
    attempts: int = 0
    error: str | None = None
    audience: str | None = None
    subject: str | None = None


def lead_label(offset: timedelta) -> str:
    hours = offset.total_seconds() / 3600
    if hours < 72 and hours == int(hours):
        return f"{int(hours)}-hour"
    if hours % 24 == 0:
        return f"{int(hours // 24)}-day"
    return f"{offset.total_seconds() / 60:g}-minute"


def notice_name(offset: timedelta) -> str:
    hours = offset.total_seconds() / 3600
    if hours < 72 and hours == int(hours):
        return f"advance-{int(hours)}h"
    return f"advance-{int(hours // 24)}d" if hours % 24 == 0 else f"advance-{int(offset.total_seconds())}s"


def notice_key(window_id: str, notice: str, channel: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{window_id}__{notice}__{channel}")


# -- planning -----------------------------------------------------------------------------------------
def _windows(cfg: EnvironmentConfig, now: datetime) -> list[Window]:
    offsets = cfg.notifications.notices.offsets or [timedelta(0)]
    return upcoming_windows(cfg, now, now + max(offsets) + timedelta(days=1), include_skipped=True)


def plan_notices(cfg: EnvironmentConfig, now: datetime, channels: list[Channel] | None = None,
                 ledger: Ledger | None = None) -> list[PlannedNotice]:
    """Every advance notice of the upcoming windows, with its state at ``now``."""
    channels = build_channels(cfg) if channels is None else channels
    ledger = ledger or open_ledger(cfg)
    targets = routes(cfg, channels, "notice.advance")
    offsets = sorted(cfg.notifications.notices.offsets, reverse=True)
    out: list[PlannedNotice] = []
    for w in _windows(cfg, now):
        start = w.start.astimezone(UTC)  # offsets are elapsed time, whatever DST does in between
        passed = [o for o in offsets if start - o <= now]
        latest = min(passed) if passed else None
        for o in offsets:
            for ch, aud in targets:
                name = notice_name(o)
                key = notice_key(w.id, name, ch.name)
                st = ledger.status(key, now)
                if w.skipped:
                    state = "skipped"
                elif st.state == KeyState.SENT:
                    state = "sent"
                elif start - o > now:
                    state = "pending"
                elif o != latest:
                    state = "superseded"
                else:
                    state = {KeyState.NEW: "due", KeyState.FAILED: "due"}.get(st.state, st.state.value)
                out.append(PlannedNotice(key=key, window_id=w.id, schedule=w.schedule, window_start=w.start,
                                         window_end=w.end, notice=name, event="notice.advance", due_at=start - o,
                                         channel=ch.name, audience=aud.name, state=state, sent_at=st.sent_at,
                                         skipped=w.skipped))
    return out + _withdrawals(cfg, now, channels, ledger)


def _withdrawals(cfg: EnvironmentConfig, now: datetime, channels: list[Channel],
                 ledger: Ledger) -> list[PlannedNotice]:
    """Cancelled/rescheduled notices for announced windows that are no longer scheduled."""
    live = {w.id: w for w in _windows(cfg, now) if not w.skipped}
    by_name = {c.name: c for c in channels}
    out, seen = [], set()
    for key in ledger.keys():
        if "__advance-" not in key or ledger.status(key, now).state != KeyState.SENT:
            continue
        info = ledger.first_claim(key)
        w = Window.model_validate(info.get("window") or {}) if info.get("window") else None
        ch = by_name.get(str(info.get("channel")))
        if w is None or ch is None or w.id in live or w.start <= now or (w.id, ch.name) in seen:
            continue
        seen.add((w.id, ch.name))
        nxt = next((x for x in live.values() if x.schedule == w.schedule and x.start < now + RESCHEDULE_WITHIN), None)
        event = "window.rescheduled" if nxt else "window.cancelled"
        route = routes(cfg, [ch], event)
        if not route:
            continue
        k = notice_key(w.id, "withdrawn", ch.name)
        st = ledger.status(k, now)
        state = "sent" if st.state == KeyState.SENT else {KeyState.NEW: "due", KeyState.FAILED: "due"}.get(
            st.state, st.state.value)
        out.append(PlannedNotice(key=k, window_id=w.id, schedule=w.schedule, window_start=w.start,
                                 window_end=w.end, notice=event.split(".")[1], event=event, due_at=now,
                                 channel=ch.name, audience=route[0][1].name, state=state, sent_at=st.sent_at))
    return out


# -- sending ------------------------------------------------------------------------------------------
def _notice_context(cfg: EnvironmentConfig, p: PlannedNotice, w: Window, now: datetime) -> dict[str, Any]:
    spec = cfg.schedules.windows().get(w.schedule)
    dt = expected_downtime(cfg, w.runbook, spec)
    offset = w.start - p.due_at
    ctx = base_context(cfg, now)
    if spec and spec.affects:
        ctx["affects"] = list(spec.affects)
    if spec and spec.user_actions:
        ctx["user_actions"] = list(spec.user_actions)
    nxt = None
    if p.event == "window.rescheduled":
        nxt = next((x for x in _windows(cfg, now) if x.schedule == w.schedule and not x.skipped), None)
    ctx.update(window={"id": w.id, "start": w.start, "end": w.end, "label": f"{w.schedule} maintenance",
                       "schedule": w.schedule, "runbook": w.runbook},
               downtime={"seconds": dt.seconds, "source": dt.source, "source_text": dt.source_text, "runs": dt.runs},
               notice={"id": p.key, "name": p.notice, "lead": lead_label(offset) if p.event == "notice.advance" else "",
                       "late": now - p.due_at > timedelta(hours=2)},
               next_window={"start": nxt.start, "end": nxt.end} if nxt else None,
               reason="The schedule changed." if p.event.startswith("window.") else "")
    return ctx


def _message(cfg: EnvironmentConfig, p: PlannedNotice, w: Window, ch: Channel, aud: Audience,
             now: datetime) -> Message:
    from .ics import invite

    context = _notice_context(cfg, p, w, now)
    subject, body = render(cfg, p.event, aud, ch.style, context)
    attachments = []
    if ch.wants_ics:
        ics = invite(w, cfg.name, f"Maintenance: {cfg.notifications.notices.title or cfg.name}", body,
                     cancelled=p.event != "notice.advance", now=now)
        attachments.append(Attachment(name="maintenance.ics", mimetype="text/calendar", content=ics))
    return Message(event=p.event, run_id=w.id, environment=cfg.name, subject=subject, body=body,
                   audience=aud.name, notice_id=p.key, attachments=attachments,
                   severity="warning" if p.event.startswith("window.") else "info",
                   data={"window_id": w.id, "notice": p.notice, "start": w.start.isoformat(),
                         "end": w.end.isoformat(), "expected_downtime_s": context["downtime"]["seconds"],
                         "expected_downtime_source": context["downtime"]["source"]})


def _due(cfg: EnvironmentConfig, at: datetime, channels: list[Channel] | None,
         ledger: Ledger) -> Iterator[tuple[PlannedNotice, Window, Channel, Audience, Callable[[str], str]]]:
    """Each notice due (or stale) at ``at`` with its window, channel, audience and the run's redactor: what
    ``send_due`` sends and ``preview_due`` renders."""
    from ..redact import Redactor, secret_values

    channels = build_channels(cfg) if channels is None else channels
    redact = Redactor(secret_values(cfg))
    by_name = {c.name: c for c in channels}
    auds = audiences(cfg)
    windows = {w.id: w for w in _windows(cfg, at)}
    for p in plan_notices(cfg, at, channels, ledger):
        if p.state in ("due", "stale"):
            yield p, windows.get(p.window_id) or _window_from_ledger(ledger, p), by_name[p.channel], \
                auds[p.audience], redact


def send_due(cfg: EnvironmentConfig, now: datetime | None = None, clock: Clock = system_clock,
             channels: list[Channel] | None = None, ledger: Ledger | None = None,
             sleep: Callable[[float], None] = time.sleep,
             after_send: Callable[[str], None] | None = None) -> list[SendOutcome]:
    """Send every notice due at ``now`` (default ``clock()``) exactly once; refresh the status feed.

    ``after_send`` is a test hook called between a delivery and its ledger record (crash injection).
    """
    now = now or clock()
    ledger = ledger or open_ledger(cfg)
    outcomes = []
    for p, w, ch, aud, redact in _due(cfg, now, channels, ledger):
        attempt = ledger.claim(p.key, now, {"window": w.model_dump(mode="json"), "channel": ch.name,
                                            "audience": p.audience, "notice": p.notice, "event": p.event})
        if attempt is None:  # another sender has it, or at-most-once abandoned a crashed attempt
            state = ledger.status(p.key, now).state
            outcomes.append(SendOutcome(key=p.key, channel=ch.name, notice=p.notice, window_id=w.id,
                                        status="abandoned" if state == KeyState.ABANDONED else "not-claimed"))
            continue
        msg = _message(cfg, p, w, ch, aud, now)
        d = deliver(ch, msg, redact, cfg.notifications.attempts, cfg.notifications.wait_max, sleep)
        if after_send:
            after_send(p.key)
        sent_at = clock()
        # the CLI and the flow never send at a pretended time (preview_due); a library caller that does gets
        # the real send time recorded and the pretended one beside it: a pretended time is never an audit fact
        pretended = {"simulated_at": now.isoformat()} if abs((sent_at - now).total_seconds()) > 60 else {}
        ledger.finish(p.key, attempt, sent_at, d.status, channel=ch.name, kind=ch.cfg.kind, audience=p.audience,
                      attempts=d.attempts, error=d.error, subject=d.subject, event=p.event,
                      recipients=redact(ch.recipients()), receipt=d.receipt, **pretended)
        outcomes.append(SendOutcome(key=p.key, channel=ch.name, notice=p.notice, window_id=w.id, status=d.status,
                                    attempts=d.attempts, error=d.error, audience=p.audience, subject=d.subject))
    try:
        from .feed import update_feed

        update_feed(cfg, lambda doc: None, now=now, refresh_upcoming=True)
    except Exception:  # noqa: BLE001,S110 - the feed never blocks notices
        pass
    return outcomes


def preview_due(cfg: EnvironmentConfig, at: datetime, channels: list[Channel] | None = None,
                ledger: Ledger | None = None) -> list[SendOutcome]:
    """A rehearsal (``send-due --now``): what would go out if it were ``at``, rendered for each channel's
    audience, with nothing delivered, claimed or recorded and the status feed untouched. A pretended time
    never becomes a send time: a message written for another moment ("in 48 hours") would tell customers
    something false, and recording it would stop the real notice from going out at the real time."""
    out = []
    for p, w, ch, aud, redact in _due(cfg, at, channels, ledger or open_ledger(cfg)):
        msg = _message(cfg, p, w, ch, aud, at)
        out.append(SendOutcome(key=p.key, channel=p.channel, notice=p.notice, window_id=w.id, status="preview",
                               audience=p.audience, subject=redact(msg.subject)))
    return out


def _window_from_ledger(ledger: Ledger, p: PlannedNotice) -> Window:
    prefix = notice_key(p.window_id, "advance-", "")[:-2]
    for key in ledger.keys():
        if key.startswith(prefix):
            info = ledger.first_claim(key)
            if info.get("window"):
                return Window.model_validate(info["window"])
    raise LookupError(f"window {p.window_id} is neither scheduled nor in the ledger")


# -- lead-time policy ---------------------------------------------------------------------------------
class LeadTime(BaseModel):
    ok: bool
    window_id: str | None
    required_s: float | None
    delivered_at: str | None = None
    message: str


def check_lead_time(cfg: EnvironmentConfig, runbook: str, now: datetime, ledger: Ledger | None = None,
                    channels: list[Channel] | None = None) -> LeadTime:
    """Was the required advance notice of the window this run belongs to delivered in time?"""
    required = cfg.notifications.notices.required
    if required is None:
        return LeadTime(ok=True, window_id=None, required_s=None, message="no lead time required")
    w = window_at(cfg, now, runbook)
    if w is None:
        return LeadTime(ok=False, window_id=None, required_s=required.total_seconds(),
                        message=f"no scheduled window of runbook {runbook!r} at {now.isoformat(timespec='minutes')}: "
                                "users were not told")
    ledger = ledger or open_ledger(cfg)
    channels = build_channels(cfg) if channels is None else channels
    deadline = w.start.astimezone(UTC) - required + cfg.notifications.notices.tolerance
    best = None
    for o in cfg.notifications.notices.offsets:
        if o < required:
            continue
        for ch, _ in routes(cfg, channels, "notice.advance"):
            st = ledger.status(notice_key(w.id, notice_name(o), ch.name), now)
            if st.state == KeyState.SENT and st.sent_at and datetime.fromisoformat(st.sent_at) <= deadline:
                best = min(best or st.sent_at, st.sent_at)
    if best:
        return LeadTime(ok=True, window_id=w.id, required_s=required.total_seconds(), delivered_at=best,
                        message=f"notice delivered {best}, at least {lead_label(required)} ahead")
    return LeadTime(ok=False, window_id=w.id, required_s=required.total_seconds(),
                    message=f"the {lead_label(required)} notice for window {w.id} was not delivered in time")


def lead_time_gate(ctx: RunView, clock: Clock = system_clock, channels: list[Channel] | None = None) -> LeadTime | None:
    """Apply the policy to a run before it starts; records a ``notice.lead_time`` event. ``channels``: the
    run's own (built with the engine's Secret block reader); default: the environment's, built here."""
    from ..provenance import provenance  # the run's first event says who started it, where, with which files

    trigger = ctx.options.trigger.value
    if trigger == "emergency":
        ctx.event("notice.lead_time", status="exempt", trigger=trigger,
                  message="emergency run: exempt from advance notice (flagged)",
                  provenance=provenance(ctx.cfg, ctx.runbook, ctx.flow_run))
        return None
    if trigger != "scheduled":
        return None
    policy = ctx.cfg.notifications.notices.policy
    res = check_lead_time(ctx.cfg, ctx.runbook.name, clock(), channels=channels)
    status = "ok" if res.ok else ("refused" if policy == "refuse" else "warning")
    ctx.event("notice.lead_time", status=status, policy=policy, **res.model_dump(),
              provenance=provenance(ctx.cfg, ctx.runbook, ctx.flow_run))
    if not res.ok and policy == "refuse":
        raise LeadTimeRefused(f"scheduled run refused: {res.message} (notifications.notices.policy: refuse)")
    return res
