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

from .audit import read_events
from .context import RunContext

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
    """Rebuild ``ctx.state`` from what the earlier attempt recorded."""
    from .maintenance.deadman import DeadmanHandle

    ctx.state["earlier_attempts"] = earlier_attempts(events)
    on: set[str] = ctx.state.setdefault("maintenance_on", set())
    # The dead attempt's dead-man watchers: the resumed run cancels them when it lifts maintenance (or
    # replaces them when it switches it on again). Left alone they would fire on the old attempt's TTL,
    # possibly in the middle of the resumed run's work, as they name the same run id.
    watchers: dict[str, Any] = ctx.state.setdefault("maintenance_deadman", {})
    for ev in events:
        kind, d = ev["kind"], ev["data"]
        if kind == "maintenance.on" and d.get("host"):
            on.add(d["host"])
        elif kind == "maintenance.deadman_armed" and d.get("host") and d.get("handle"):
            watchers[d["host"]] = DeadmanHandle.model_validate(d["handle"])
        elif kind == "maintenance.off" and d.get("host"):
            on.discard(d["host"])
            watchers.pop(d["host"], None)
        elif kind == "cleanup.purged":
            ctx.state.setdefault("cleanup", []).append(d)
        elif kind == "step.finished" and d.get("status") == "succeeded":
            data = d.get("data") or {}
            if "backup" in data:
                ctx.state["backup"] = {**data["backup"], "verified": False}
            if "verification" in data and ctx.state.get("backup"):
                ctx.state["backup"].update(verified=True, verification=data["verification"])


def attempt_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``events`` without report-only ``run.resumed`` events (a finished run whose report was written late:
    not an attempt, nothing ran)."""
    return [e for e in events if not (e.get("kind") == "run.resumed" and (e.get("data") or {}).get("report_only"))]


def earlier_attempts(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What the earlier attempts leave the resumed one: when the run first started (its window policy, e.g. a
    schedule's cutoff, is that start's), and the maintenance window as the site saw it.

    ``down_since``: the site has shown the maintenance page since then (the window of the attempt that
    switched maintenance on for a host that is still on) — the resumed attempt's window continues it.
    ``window_open``: a window was opened and never closed; ``last_off_at``: the last time maintenance went
    off, which is when the site came back if every host is off."""
    started_at = next((e["ts"] for e in events if e["kind"] == "run.started"), None)
    opened_at: str | None = None
    window_open = False
    on_since: dict[str, str] = {}
    last_off_at: str | None = None
    for ev in events:
        kind, d = ev["kind"], ev["data"]
        if kind == "window.opened":
            opened_at, window_open = ev["ts"], True
        elif kind == "window.closed":
            window_open = False
        elif kind == "maintenance.on" and d.get("host"):
            on_since.setdefault(d["host"], opened_at if window_open and opened_at else ev["ts"])
        elif kind == "maintenance.off" and d.get("host"):
            if on_since.pop(d["host"], None) is not None:
                last_off_at = ev["ts"]
    return {"started_at": started_at, "window_open": window_open, "opened_at": opened_at,
            "down_since": min(on_since.values(), key=_epoch) if on_since else None, "last_off_at": last_off_at}


def down_since(ctx: RunContext) -> str | None:
    """A resumed attempt whose site still shows the maintenance page (an earlier attempt died inside its
    window): the window goes on, timed from when that attempt opened it — not from now."""
    if not ctx.state.get("maintenance_on"):
        return None
    since: str | None = (ctx.state.get("earlier_attempts") or {}).get("down_since")
    return since


def window_done_earlier(ctx: RunContext, window: list[PlannedStep], completed: dict[str, Any]) -> bool:
    """Resumed after an earlier attempt did every window step and lifted maintenance: the site is up, there
    is no window to open again (that would stretch the reported window over the gap and this attempt). If
    that attempt died before closing its window, it is closed now, at the time maintenance went off."""
    if ctx.state.get("maintenance_on") or any(s.spec_key() not in completed for s in window):
        return False
    earlier = ctx.state.get("earlier_attempts") or {}
    if earlier.get("window_open") and earlier.get("opened_at"):
        ended = earlier.get("last_off_at") or earlier["opened_at"]
        ctx.event("window.closed", ended_at=ended, duration_s=round(_epoch(ended) - _epoch(earlier["opened_at"]), 3),
                  ok=True, closed_for="an earlier attempt that died after lifting maintenance")
    for s in window:
        ctx.event("step.already_done", stage=s.stage.value, step=s.label, uses=s.uses, key=s.spec_key())
    return True


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def prior_run(ctx_run_dir: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``run.started`` data of a run folder and all its events (for ``pitstop resume``)."""
    events = read_events(ctx_run_dir / "audit.jsonl")
    start = next(e for e in events if e["kind"] == "run.started")
    return start["data"], events
