"""Resuming a crashed run: the audit log is the ledger of completed steps.

A step is done when the run's log holds its ``step.finished`` event with status ``succeeded``
(keyed by stage, position and step name). A resumed run skips those steps — so a backup is not
taken twice and a purge is not rerun — and rebuilds the run state later steps rely on (the
backup and its verification, the hosts in maintenance and their dead-man watchers, the purge
results) from the same events.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from .context import RunContext
from .plugin import WindowStatus
from .registry import plugins
from .runstate import EarlierAttempts

if TYPE_CHECKING:
    from .plan import PlannedStep


def completed_steps(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    for ev in events:
        d = ev["data"]
        if ev["kind"] == "step.finished" and d.get("key") and d.get("status") == "succeeded":
            done[d["key"]] = d
    return done


def rehydrate(ctx: RunContext, events: list[dict[str, Any]]) -> None:
    """Rebuild ``ctx.state`` from what the earlier attempts recorded: the engine's own part here, every
    plug-in's part through its state model's ``rebuild`` (the backup and its verification, the hosts in
    maintenance and their dead-man watchers, the purge results ...)."""
    ctx.state.earlier = earlier_attempts(events)
    for plugin in plugins():
        if plugin.state is not None:
            ctx.state.of(plugin.state).rebuild(events)


def attempt_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``events`` without report-only ``run.resumed`` events (a finished run whose report was written late:
    not an attempt, nothing ran)."""
    return [e for e in events if not (e.get("kind") == "run.resumed" and (e.get("data") or {}).get("report_only"))]


def earlier_attempts(events: list[dict[str, Any]]) -> EarlierAttempts:
    """When the run first started (its window policy, e.g. a schedule's cutoff, is that start's), and whether
    a window was opened and never closed (``window_open``, ``opened_at``)."""
    started_at = next((e["ts"] for e in events if e["kind"] == "run.started"), None)
    opened_at: str | None = None
    window_open = False
    for ev in events:
        if ev["kind"] == "window.opened":
            opened_at, window_open = ev["ts"], True
        elif ev["kind"] == "window.closed":
            window_open = False
    return EarlierAttempts(started_at=started_at, window_open=window_open, opened_at=opened_at)


def window_status(ctx: RunContext) -> WindowStatus:
    """The plug-ins' window status together: held by any; out of service since the earliest; put back in
    service at the latest time one of them did."""
    found = [st for p in plugins() if (st := p.window_status(ctx)) is not None]
    since = [st.down_since for st in found if st.held and st.down_since]
    lifted = [st.lifted_at for st in found if st.lifted_at]
    return WindowStatus(held=any(st.held for st in found), down_since=min(since, key=_epoch) if since else None,
                        lifted_at=max(lifted, key=_epoch) if lifted else None)


def down_since(ctx: RunContext) -> str | None:
    """A resumed attempt whose site still shows the maintenance page (an earlier attempt died inside its
    window): the window goes on, timed from when that attempt opened it — not from now."""
    status = window_status(ctx)
    return status.down_since if status.held else None


def window_done_earlier(ctx: RunContext, window: list[PlannedStep], completed: dict[str, Any]) -> bool:
    """Resumed after an earlier attempt did every window step and lifted maintenance: the site is up, there
    is no window to open again (that would stretch the reported window over the gap and this attempt). If
    that attempt died before closing its window, it is closed now, at the time maintenance went off."""
    status = window_status(ctx)
    if status.held or any(s.spec_key() not in completed for s in window):
        return False
    earlier = ctx.state.earlier or EarlierAttempts()
    if earlier.window_open and earlier.opened_at:
        ended = status.lifted_at or earlier.opened_at
        ctx.event("window.closed", ended_at=ended, duration_s=round(_epoch(ended) - _epoch(earlier.opened_at), 3),
                  ok=True, closed_for="an earlier attempt that died after lifting maintenance")
    for s in window:
        ctx.event("step.already_done", stage=s.stage.value, step=s.label, uses=s.uses, key=s.spec_key())
    return True


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()
