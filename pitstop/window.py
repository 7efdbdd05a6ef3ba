"""Window-aware admission, overrun detection and blackout handling for one run.

A scheduled run belongs to a window of its schedule (start, end, cutoff). Before each unit of work
inside the maintenance window the executor asks :meth:`WindowPolicy.admit`: a unit whose estimate
(p90 of the same stage in earlier runs, else the runbook's ``estimate`` of its steps) would end after
the cutoff is not started — the run goes to its always-finally path and says "window exceeded".
Manual and emergency runs get a window of their announced downtime (no cutoff). Overruns in
progress are announced by the notifier (``window.extended``, pitstop/notify/notifier.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from .config import EnvironmentConfig
from .errors import InputError
from .history import p90, recent_reports
from .runbook_model import Runbook


def stage_history(cfg: EnvironmentConfig, runbook: str, limit: int = 10) -> dict[str, float]:
    """p90 duration per stage (in-window units) over the latest successful runs of ``runbook``."""
    per_stage: dict[str, list[float]] = {}
    for r in recent_reports(cfg, runbook, limit):
        for s in r.get("stages", []):
            if "window" in s.get("phases", []) and s.get("started_at") and s.get("finished_at"):
                secs = (datetime.fromisoformat(s["finished_at"]) - datetime.fromisoformat(s["started_at"]))
                per_stage.setdefault(s["name"], []).append(secs.total_seconds())
    return {k: p90(v) for k, v in per_stage.items()}


@dataclass
class WindowPolicy:
    start: datetime
    end: datetime
    cutoff_at: datetime | None
    source: str  # "schedule <name>" or "announced downtime"
    estimates: dict[str, float] = field(default_factory=dict)

    def admit(self, stage: str, step_estimates: list[float], now: datetime | None = None) -> str | None:
        """``None`` to go ahead, else why the unit must not start."""
        if self.cutoff_at is None:
            return None
        now = now or datetime.now(UTC)
        estimate = self.estimates.get(stage, sum(step_estimates))
        if now + timedelta(seconds=estimate) > self.cutoff_at:
            return (f"stage {stage} needs ~{estimate:.0f}s but the window's cutoff is at "
                    f"{self.cutoff_at.isoformat(timespec='seconds')} ({source_note(self)})")
        return None

    def describe(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "cutoff_at": self.cutoff_at.isoformat() if self.cutoff_at else None, "source": self.source}


def source_note(p: WindowPolicy) -> str:
    return p.source


def policy_for(cfg: EnvironmentConfig, rb: Runbook, trigger: str, now: datetime | None = None) -> WindowPolicy:
    now = now or datetime.now(UTC)
    estimates = stage_history(cfg, rb.name)
    if trigger == "scheduled":
        from .schedule import window_at

        w = window_at(cfg, now, rb.name)
        if w is not None:
            return WindowPolicy(start=w.start, end=w.end, cutoff_at=w.cutoff_at, source=f"schedule {w.schedule}",
                                estimates=estimates)
    downtime = rb.announced_downtime(cfg.window.expected_downtime)
    return WindowPolicy(start=now, end=now + downtime, cutoff_at=None, source="announced downtime",
                        estimates=estimates)


def blackout_now(cfg: EnvironmentConfig, now: datetime | None = None) -> str | None:
    """The reason of a blackout covering ``now`` in the environment's timezone, if any."""
    from .schedule import blackout_range

    now = now or datetime.now(UTC)
    tz = ZoneInfo(cfg.timezone)
    for b in cfg.schedules.blackouts:
        lo, hi = blackout_range(b, tz)
        if lo <= now < hi:
            return b.reason
    return None


def check_blackout(cfg: EnvironmentConfig, trigger: str, override: bool, reason: str,
                   now: datetime | None = None) -> str | None:
    """For scheduled runs: the blackout to skip for (or None). Others must override explicitly."""
    why = blackout_now(cfg, now)
    if why is None or trigger == "scheduled":
        return why
    if not override:
        raise InputError(f"{cfg.source}: now is inside the blackout {why!r}; an {trigger} run needs "
                         "--override-blackout with --reason")
    if not reason.strip():
        raise InputError("--override-blackout needs --reason")
    return None
