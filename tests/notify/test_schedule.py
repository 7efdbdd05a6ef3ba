"""Schedule → windows: RRULE and cron, DST changes of Europe/Berlin and America/New_York, blackouts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from pitstop.config import load_config
from pitstop.errors import ConfigError
from pitstop.schedule import next_window, upcoming_windows, window_at

BASE = {"name": "t", "database": {"embedded": True}}


def cfg_with(tmp_path: Path, tz: str, schedules: dict[str, Any]) -> Any:
    p = tmp_path / "env.yaml"
    p.write_text(yaml.safe_dump({**BASE, "timezone": tz, "schedules": schedules}))
    return load_config(str(p))


def starts(cfg: Any, a: datetime, b: datetime) -> list[str]:
    return [w.start.isoformat() for w in upcoming_windows(cfg, a, b)]


@pytest.mark.parametrize("kind", ["rrule", "cron"])
def test_berlin_spring_forward_0230_moves_to_0330_once(tmp_path: Path, kind: str) -> None:
    spec = {"rrule": "FREQ=DAILY", "at": "02:30"} if kind == "rrule" else {"cron": "30 2 * * *"}
    cfg = cfg_with(tmp_path, "Europe/Berlin", {"nightly": {**spec, "duration": "1h"}})
    got = starts(cfg, datetime(2026, 3, 28, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC))
    assert got == ["2026-03-28T02:30:00+01:00",      # CET
                   "2026-03-29T03:30:00+02:00",      # 02:30 does not exist: offset before the gap
                   "2026-03-30T02:30:00+02:00"]      # CEST
    ws = upcoming_windows(cfg, datetime(2026, 3, 29, tzinfo=UTC), datetime(2026, 3, 30, tzinfo=UTC))
    assert ws[0].end - ws[0].start == timedelta(hours=1)


@pytest.mark.parametrize("kind", ["rrule", "cron"])
def test_berlin_fall_back_0230_runs_once_first_occurrence(tmp_path: Path, kind: str) -> None:
    spec = {"rrule": "FREQ=WEEKLY;BYDAY=SU", "at": "02:30"} if kind == "rrule" else {"cron": "30 2 * * 0"}
    cfg = cfg_with(tmp_path, "Europe/Berlin", {"weekly": {**spec, "duration": "2h"}})
    ws = upcoming_windows(cfg, datetime(2026, 10, 24, tzinfo=UTC), datetime(2026, 10, 26, tzinfo=UTC))
    assert [w.start.isoformat() for w in ws] == ["2026-10-25T02:30:00+02:00"]  # CEST, the first 02:30
    w = ws[0]
    assert w.start.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    # duration is elapsed time: 2 h later is 03:30 CET (the wall clock went back an hour)
    assert w.end.astimezone(ZoneInfo("Europe/Berlin")).isoformat() == "2026-10-25T03:30:00+01:00"


def test_new_york_monthly_last_sunday_and_dst_days(tmp_path: Path) -> None:
    cfg = cfg_with(tmp_path, "America/New_York", {
        "spring": {"rrule": "FREQ=YEARLY;BYMONTH=3;BYDAY=2SU", "at": "02:15", "duration": "1h"},
        "fall": {"cron": "30 1 1-7 11 0", "duration": "1h"}})  # first Sunday of November, 01:30
    got = starts(cfg, datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert "2026-03-08T03:15:00-04:00" in got           # 02:15 EST does not exist → 03:15 EDT
    fall = [s for s in got if s.startswith("2026-11-01")]
    assert fall == ["2026-11-01T01:30:00-04:00"]        # ambiguous 01:30: EDT (first), once


def test_demo_schedules_first_sunday_and_quarterly(tmp_path: Path) -> None:
    cfg = load_config("demo")
    ws = upcoming_windows(cfg, datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 5, 1, tzinfo=UTC))
    assert [(w.schedule, w.start.date().isoformat()) for w in ws] == [
        ("quarterly", "2027-01-02"), ("monthly", "2027-02-07"), ("monthly", "2027-03-07"),
        ("quarterly", "2027-04-03")]
    assert all(w.start.hour == 2 for w in ws)
    q = ws[0]
    assert q.end - q.start == timedelta(hours=4) and q.end - q.cutoff_at == timedelta(hours=1)
    assert q.id == "quarterly@20270102T010000Z"


def test_blackouts_skip_with_reason(tmp_path: Path) -> None:
    p = tmp_path / "env.yaml"
    p.write_text(yaml.safe_dump({**BASE, "timezone": "Europe/Berlin", "schedules": {
        "weekly": {"rrule": "FREQ=WEEKLY;BYDAY=SA", "at": "22:00", "duration": "3h"},
        "blackouts": [{"start": "2026-11-27", "end": "2026-11-30", "reason": "Black Friday"},
                      {"date": "2026-12-06", "reason": "month-end close"}]}}))
    cfg = load_config(str(p))
    a, b = datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 12, 14, tzinfo=UTC)
    kept = [w.start.date().isoformat() for w in upcoming_windows(cfg, a, b)]
    assert kept == ["2026-11-21", "2026-12-12"]
    allw = upcoming_windows(cfg, a, b, include_skipped=True)
    reasons = {w.start.date().isoformat(): w.skipped for w in allw}
    assert reasons["2026-11-28"] == "blackout: Black Friday"
    # Saturday 22:00 + 3 h runs into Sunday 6 Dec: the overlap alone is enough to skip it
    assert reasons["2026-12-05"] == "blackout: month-end close"
    clock = lambda: datetime(2026, 11, 22, tzinfo=UTC)  # noqa: E731
    nxt = next_window(cfg, clock=clock)
    assert nxt is not None and nxt.start.date().isoformat() == "2026-12-12"
    assert window_at(cfg, nxt.start + timedelta(minutes=5)) == nxt


@pytest.mark.parametrize("schedules, needle", [
    ({"m": {"rrule": "FREQ=MONTHLY", "cron": "0 2 * * 0"}}, "exactly one of `rrule` or `cron`"),
    ({"m": {"cron": "61 2 * * *"}}, "invalid cron"),
    ({"m": {"rrule": "FREQ=SOMETIMES"}}, "invalid rrule"),
    ({"m": {"rrule": "FREQ=DAILY", "at": "25:00"}}, "at"),
    ({"m": {"rrule": "FREQ=DAILY", "duration": "1h", "cutoff": "2h"}}, "cutoff"),
    ({"blackouts": [{"start": "2026-01-01", "reason": "x"}]}, "start` and `end"),
])
def test_bad_schedules_are_config_errors_with_line(tmp_path: Path, schedules: dict[str, Any], needle: str) -> None:
    p = tmp_path / "env.yaml"
    p.write_text(yaml.safe_dump({**BASE, "schedules": schedules}))
    with pytest.raises(ConfigError) as exc:
        load_config(str(p))
    msg = str(exc.value)
    assert needle in msg and f"{p}:" in msg
