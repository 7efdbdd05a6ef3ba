"""Durations and window placement."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pitstop.config import load_config
from pitstop.plan import Phase, build_plan
from pitstop.runbook import load_runbook
from pitstop.units import format_duration, parse_duration


@pytest.mark.parametrize("text,secs", [("90d", 90 * 86400), ("15m", 900), ("2h", 7200), ("30s", 30), ("1w", 604800),
                                       (45, 45), ("1.5h", 5400)])
def test_parse_duration(text: object, secs: int) -> None:
    assert parse_duration(text) == timedelta(seconds=secs)


@pytest.mark.parametrize("bad", ["soon", "-5m", "10 years", "", None, -3])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_format_roundtrip() -> None:
    for text in ("90d", "15m", "2h", "1w", "45s"):
        assert format_duration(parse_duration(text)) == text


def test_monthly_plan_puts_only_exclusive_work_inside_the_window() -> None:
    cfg = load_config("demo")
    plan = build_plan(cfg, load_runbook("monthly", cfg))
    phases = {s.label: s.phase for s in plan.steps}
    assert phases["purge expired rows"] == Phase.BEFORE  # online-safe: runs before maintenance on
    assert phases["pg_dump to storage"] == Phase.BEFORE
    assert phases["reload application"] == Phase.WINDOW  # host.command is exclusive by default
    assert phases["maintenance flag gone"] == Phase.AFTER
    order = [s.label for s in plan.steps]
    assert order.index("restore-verify the dump") < order.index("purge expired rows")
    window = [s.label for s in plan.phase(Phase.WINDOW)]
    assert window[0] == "maintenance page on" and window[-1] == "maintenance page off"
    assert next(s for s in plan.steps if s.label == "maintenance page on").hosts == ["web-1", "web-2"]


def test_window_override_moves_step_inside() -> None:
    cfg = load_config("demo")
    plan = build_plan(cfg, load_runbook("quarterly", cfg))
    step = next(s for s in plan.steps if s.uses == "database.vacuum_analyze")
    assert step.phase == Phase.WINDOW and "runbook sets" in step.why
