"""Deployments come from the environment config; Prefect's scheduler agrees with pitstop's windows."""

from __future__ import annotations

import asyncio
import inspect
from datetime import UTC, datetime, timedelta

from prefect.server.schemas.schedules import CronSchedule, RRuleSchedule

from pitstop.config import load_config
from pitstop.deploy import deployment_specs, prefect_yaml
from pitstop.schedule import upcoming_windows
from tests.conftest import ROOT


def test_prefect_yaml_is_generated_from_the_demo_config() -> None:
    cfg = load_config("demo")
    assert (ROOT / "prefect.yaml").read_text() == prefect_yaml(deployment_specs(cfg), "pitstop")


def test_deployments_carry_names_only_and_the_right_kinds() -> None:
    specs = {s.name: s for s in deployment_specs(load_config("demo"))}
    assert set(specs) == {"demo-monthly", "demo-quarterly", "demo-emergency", "demo-notices"}
    assert specs["demo-emergency"].rrule is None and specs["demo-emergency"].cron is None
    assert specs["demo-emergency"].parameters["runbook"] == "emergency-disk"  # from the config, not "monthly"
    assert specs["demo-notices"].cron == "0 * * * *"
    for s in specs.values():
        assert set(s.parameters) <= {"env", "runbook", "trigger"}  # never a secret or a DSN


def test_prefect_schedules_match_pitstop_windows_across_dst() -> None:
    cfg = load_config("demo")
    start = datetime(2027, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=366)
    ours = {}
    for w in upcoming_windows(cfg, start, end, include_skipped=True):
        ours.setdefault(w.schedule, []).append(w.start.astimezone(UTC))
    for spec in deployment_specs(cfg):
        if not spec.rrule:
            continue
        sched = RRuleSchedule(rrule=spec.rrule, timezone=spec.timezone)
        dates = sched.get_dates(n=50, start=start, end=end)
        if inspect.iscoroutine(dates):  # async in the server schemas of some Prefect versions
            dates = asyncio.run(dates)
        theirs = [d.astimezone(UTC) for d in dates]
        name = spec.name.removeprefix("demo-")
        assert theirs == ours[name], name
    # 02:00 Berlin is 01:00 UTC in winter and 00:00 UTC in summer: the schedule follows the wall clock.
    assert {d.hour for d in ours["monthly"]} == {0, 1}
    CronSchedule(cron="0 * * * *", timezone="Europe/Berlin")  # the notices schedule is valid for Prefect


def test_no_emergency_runbook_in_the_config_no_emergency_deployment() -> None:
    cfg = load_config("demo")
    cfg.schedules.emergency_runbook = None
    assert "demo-emergency" not in {s.name for s in deployment_specs(cfg)}
