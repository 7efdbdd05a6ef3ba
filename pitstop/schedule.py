"""Maintenance windows computed from the environment's ``schedules`` (cron or RFC 5545 RRULE).

The public API is deliberately small::

    upcoming_windows(cfg, start, end, include_skipped=False) -> list[Window]
    next_window(cfg, schedule=None, clock=system_clock) -> Window | None

**Wall-clock rule (DST).** Occurrences are computed in *naive local wall time* of the schedule's
timezone (dateutil for RRULE, cronsim for cron), then made aware with the RFC 5545 §3.3.5 rule:

* a local time that does not exist (spring forward, e.g. 02:30 on the last Sunday of March in
  Europe/Berlin) is read with the UTC offset *before* the gap, i.e. it moves forward by the length
  of the gap (02:30 → 03:30 CEST). The window neither vanishes nor doubles;
* a local time that exists twice (fall back) means its *first* occurrence (the summer-time one),
  so a 02:30 window on the last Sunday of October runs once, at 02:30 CEST.

Occurrences that land on the same instant after this rule are kept once. The window's duration is
elapsed time: ``end = start + duration`` even across a DST change. ``cutoff`` is the margin before
``end`` after which no new stage is admitted: ``cutoff_at = end - cutoff``.

Blackouts (dates or ranges in the environment's timezone, end date inclusive) drop every window that
overlaps them; ``include_skipped=True`` returns those windows too, with ``skipped`` set to the
blackout's reason, so a plan can say why a run will not happen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from .config import Blackout, EnvironmentConfig, ScheduleSpec

Clock = Callable[[], datetime]

MAX_OCCURRENCES = 10_000  # safety bound for a pathological rule over a long range


def system_clock() -> datetime:
    return datetime.now(UTC)


class Window(BaseModel):
    """One scheduled maintenance window (all datetimes timezone-aware)."""

    model_config = ConfigDict(frozen=True)

    schedule: str
    runbook: str
    timezone: str
    start: datetime
    end: datetime
    cutoff_at: datetime
    skipped: str | None = None

    @property
    def id(self) -> str:
        """Stable identity: schedule name and UTC start, e.g. ``monthly@20261206T010000Z``."""
        return f"{self.schedule}@{self.start.astimezone(UTC):%Y%m%dT%H%M%SZ}"

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def local(self, tz: str | None = None) -> tuple[datetime, datetime]:
        """Start and end in ``tz`` (default: the schedule's own timezone)."""
        zone = ZoneInfo(tz or self.timezone)
        return self.start.astimezone(zone), self.end.astimezone(zone)


# -- wall-clock handling ------------------------------------------------------------------------------
def localize(naive: datetime, tz: ZoneInfo) -> datetime:
    """A naive local wall time made aware by the RFC 5545 rule described in the module docstring."""
    aware = naive.replace(tzinfo=tz, fold=0)  # fold=0: first occurrence / offset before a gap
    return aware.astimezone(UTC).astimezone(tz)  # normalise: 02:30 in a gap becomes 03:30


def _naive_occurrences(spec: ScheduleSpec, after: datetime) -> Iterator[datetime]:
    """Naive local occurrences of ``spec`` at or after the naive local time ``after``."""
    if spec.cron:
        from cronsim import CronSim

        it = CronSim(spec.cron, after - timedelta(seconds=1))
        yield from it
        return
    from dateutil.rrule import rrulestr

    assert spec.rrule is not None
    hh, mm = spec.at_time
    dtstart = datetime.combine(spec.since or date(2000, 1, 1), time(hh, mm))
    rule = rrulestr(spec.rrule_body, dtstart=dtstart, ignoretz=True)
    yield from rule.xafter(after, inc=True)


def _windows_of(name: str, spec: ScheduleSpec, cfg: EnvironmentConfig, start: datetime,
                end: datetime) -> list[Window]:
    tz = ZoneInfo(spec.timezone or cfg.timezone)
    # Look back by a day of wall time so a gap shift or an offset change never loses an occurrence.
    after = start.astimezone(tz).replace(tzinfo=None) - timedelta(days=1)
    out: dict[datetime, Window] = {}
    for n, naive in enumerate(_naive_occurrences(spec, after)):
        if n > MAX_OCCURRENCES:
            break
        begin = localize(naive, tz)
        if begin >= end + timedelta(days=1):
            break
        if not (start <= begin < end):
            continue
        stop = (begin.astimezone(UTC) + spec.duration).astimezone(tz)  # elapsed, not wall-clock, time
        out.setdefault(begin.astimezone(UTC), Window(
            schedule=name, runbook=spec.runbook or name, timezone=str(tz), start=begin, end=stop,
            cutoff_at=(stop.astimezone(UTC) - spec.cutoff).astimezone(tz)))
    return list(out.values())


# -- blackouts ----------------------------------------------------------------------------------------
def blackout_range(b: Blackout, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """A blackout as an aware half-open interval; date bounds cover whole local days."""

    def bound(v: date | datetime, is_end: bool) -> datetime:
        if isinstance(v, datetime):
            return v if v.tzinfo else localize(v, tz)
        day = v + timedelta(days=1) if is_end else v
        return localize(datetime.combine(day, time(0, 0)), tz)

    first = b.date or b.start
    last = b.date or b.end
    assert first is not None and last is not None
    return bound(first, False), bound(last, True)


def blackout_reason(window: Window, blackouts: list[Blackout], tz: ZoneInfo) -> str | None:
    for b in blackouts:
        lo, hi = blackout_range(b, tz)
        if window.start < hi and window.end > lo:
            return f"blackout: {b.reason}"
    return None


# -- public API ---------------------------------------------------------------------------------------
def upcoming_windows(cfg: EnvironmentConfig, start: datetime, end: datetime,
                     include_skipped: bool = False) -> list[Window]:
    """Every window of every enabled schedule starting in ``[start, end)``, sorted by start.

    ``start``/``end`` must be timezone-aware. Windows overlapping a blackout are left out unless
    ``include_skipped``, in which case they come back with ``skipped`` set to the reason.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("upcoming_windows needs timezone-aware start and end")
    env_tz = ZoneInfo(cfg.timezone)
    windows: list[Window] = []
    for name, spec in cfg.schedules.windows().items():
        if not spec.enabled:
            continue
        for w in _windows_of(name, spec, cfg, start, end):
            reason = blackout_reason(w, cfg.schedules.blackouts, env_tz)
            if reason:
                if include_skipped:
                    windows.append(w.model_copy(update={"skipped": reason}))
                continue
            windows.append(w)
    return sorted(windows, key=lambda w: (w.start, w.schedule))


def next_window(cfg: EnvironmentConfig, schedule: str | None = None, clock: Clock = system_clock,
                horizon: timedelta = timedelta(days=400)) -> Window | None:
    """The next window (of ``schedule``, or of any schedule) not in a blackout."""
    now = clock()
    for w in upcoming_windows(cfg, now, now + horizon):
        if schedule is None or w.schedule == schedule:
            return w
    return None


def window_at(cfg: EnvironmentConfig, when: datetime, runbook: str | None = None,
              early: timedelta = timedelta(hours=1)) -> Window | None:
    """The scheduled window a run starting at ``when`` belongs to (started up to ``early`` ahead)."""
    for w in upcoming_windows(cfg, when - timedelta(days=2), when + early + timedelta(seconds=1)):
        if w.start - early <= when < w.end and (runbook is None or w.runbook == runbook):
            return w
    return None
