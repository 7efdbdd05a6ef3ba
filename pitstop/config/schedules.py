"""Maintenance schedules and blackout periods (``schedules``)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from ..units import Duration
from .base import Name, Strict, _check_tz

_HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"


class ScheduleSpec(Strict):
    """One recurring window: ``rrule`` (RFC 5545, local wall time ``at``) or ``cron`` (5 fields)."""

    rrule: str | None = None
    cron: str | None = None
    at: str = Field("02:00", pattern=_HHMM)
    since: dt.date | None = Field(None, description="DTSTART date for rules with INTERVAL>1")
    timezone: Annotated[str | None, AfterValidator(_check_tz)] = None
    duration: Duration = Field("2h", validate_default=True)  # type: ignore[assignment]
    cutoff: Duration = Field("0s", validate_default=True)  # type: ignore[assignment]
    runbook: Name | None = None
    enabled: bool = True
    expected_downtime: Duration | None = None
    affects: list[str] = Field(default_factory=list)
    user_actions: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rule(self) -> ScheduleSpec:
        if bool(self.rrule) == bool(self.cron):
            raise ValueError("a schedule needs exactly one of `rrule` or `cron`")
        if self.cutoff >= self.duration:
            raise ValueError("`cutoff` must be shorter than `duration`")
        if self.cron:
            from cronsim import CronSim, CronSimError

            if len(self.cron.split()) != 5:
                raise ValueError("`cron` needs 5 fields (minute hour day-of-month month day-of-week)")
            try:
                CronSim(self.cron, dt.datetime(2000, 1, 1))
            except CronSimError as exc:
                raise ValueError(f"invalid cron {self.cron!r}: {exc}") from None
        else:
            from dateutil.rrule import rrulestr

            if "DTSTART" in self.rrule_body.upper():
                raise ValueError("leave DTSTART out of `rrule`; use `at` (and `since`)")
            try:
                rrulestr(self.rrule_body, dtstart=dt.datetime(2000, 1, 1), ignoretz=True)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"invalid rrule {self.rrule!r}: {exc}") from None
        return self

    @property
    def rrule_body(self) -> str:
        return (self.rrule or "").strip().removeprefix("RRULE:")

    @property
    def at_time(self) -> tuple[int, int]:
        hh, mm = self.at.split(":")
        return int(hh), int(mm)


class Blackout(Strict):
    """``{date: 2026-12-24, reason: ...}`` or ``{start: ..., end: ..., reason: ...}`` (end inclusive)."""

    day: dt.date | None = Field(None, alias="date")
    start: dt.datetime | dt.date | None = None
    end: dt.datetime | dt.date | None = None
    reason: str = Field(min_length=1)

    @model_validator(mode="after")
    def _bounds(self) -> Blackout:
        if bool(self.day) == bool(self.start or self.end):
            raise ValueError("a blackout needs `date`, or `start` and `end`")
        if self.day is None and (self.start is None or self.end is None):
            raise ValueError("a blackout range needs both `start` and `end`")
        return self

    @property
    def date(self) -> dt.date | None:
        return self.day


class SchedulesConfig(Strict):
    """``schedules:`` — named schedules (``monthly: {...}``) plus the reserved key ``blackouts``."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    __pydantic_extra__: dict[str, ScheduleSpec] = Field(init=False)  # type: ignore[assignment]

    blackouts: list[Blackout] = Field(default_factory=list)
    emergency_runbook: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
                                          description="runbook of the `<env>-emergency` deployment (none: no "
                                                      "such deployment is created)")

    @model_validator(mode="after")
    def _names(self) -> SchedulesConfig:
        import re

        for name in self.windows():
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", name):
                raise ValueError(f"invalid schedule name {name!r}")
        return self

    def windows(self) -> dict[str, ScheduleSpec]:
        return dict(self.__pydantic_extra__ or {})
