"""Window admission and blackouts, driven through the CLI and with injected times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from pitstop.config import load_config
from pitstop.errors import InputError
from pitstop.window import WindowPolicy, check_blackout
from tests.conftest import ROOT, report_of, run_cli


def _today(tz: str = "Europe/Berlin") -> str:
    return datetime.now(ZoneInfo(tz)).date().isoformat()


def test_admission_refuses_a_unit_that_would_pass_the_cutoff() -> None:
    now = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)
    p = WindowPolicy(start=now, end=now + timedelta(hours=2), cutoff_at=now + timedelta(minutes=90),
                     source="schedule monthly", estimates={"server-tuning": 600})
    assert p.admit("server-tuning", [], now=now) is None
    late = now + timedelta(minutes=85)
    assert "cutoff" in (p.admit("server-tuning", [], now=late) or "")
    assert p.admit("database-cleanup", [60.0], now=late) is None  # no history: the step estimates count
    assert p.admit("database-cleanup", [600.0], now=late) is not None


def test_blackout_rules(tmp_path: Path) -> None:
    cfg = load_config("demo")
    inside = datetime(2027, 11, 26, 12, 0, tzinfo=UTC)  # Black Friday blackout in config/demo.yaml
    outside = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert "Black Friday" in (check_blackout(cfg, "scheduled", False, "", now=inside) or "")
    assert check_blackout(cfg, "scheduled", False, "", now=outside) is None
    with pytest.raises(InputError, match="--override-blackout"):
        check_blackout(cfg, "emergency", False, "db down", now=inside)
    assert check_blackout(cfg, "emergency", True, "db down", now=inside) is None


def _with_blackout_today(cfg: dict[str, Any]) -> None:
    cfg["schedules"] = {"blackouts": [{"date": _today(), "reason": "test freeze"}]}


def test_scheduled_run_in_blackout_is_skipped_and_says_so(make_env: Any) -> None:
    env = make_env(_with_blackout_today)
    res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--trigger", "scheduled", "--engine", "local",
                  "--json")
    assert res.returncode == 0, res.stderr
    report = report_of(res.stdout)
    assert report["status"] == "skipped" and report["backup"] is None
    assert all(st["status"] == "skipped" for s in report["stages"] if s["name"] != "report" for st in s["steps"])
    assert any(n["event"] == "run.skipped" for n in report["notifications"])


def test_emergency_in_blackout_needs_override(make_env: Any) -> None:
    env = make_env(_with_blackout_today)
    base = ("emergency", "--env", str(env), "--runbook", "monthly", "--reason", "payments failing", "--engine",
            "local", "--json")
    refused = run_cli(*base)
    assert refused.returncode == 2 and "test freeze" in refused.stderr and "--override-blackout" in refused.stderr
    ok = run_cli(*base, "--override-blackout")
    assert ok.returncode == 0, ok.stderr
    report = report_of(ok.stdout)
    assert report["trigger"] == "emergency" and report["reason"] == "payments failing"
    assert any(d["kind"] == "blackout.overridden" for d in report["deviations"])


def test_scheduled_run_outside_its_cutoff_goes_to_always_finally(make_env: Any, tmp_path: Path) -> None:
    def every_minute(cfg: dict[str, Any]) -> None:
        cfg["schedules"] = {"monthly": {"cron": "0 * * * *", "duration": "59m", "cutoff": "58m",
                                        "runbook": "monthly"}}

    env = make_env(every_minute)
    rb = yaml.safe_load((ROOT / "runbooks" / "monthly.yaml").read_text())
    tuning = next(s for s in rb["stages"] if s["name"] == "server-tuning")
    tuning["steps"][-1]["estimate"] = "10m"  # the in-window reload "needs" 10 minutes
    rb_path = tmp_path / "rb.yaml"
    rb_path.write_text(yaml.safe_dump(rb, sort_keys=False))
    res = run_cli("run", "--env", str(env), "--runbook", str(rb_path), "--trigger", "scheduled", "--engine",
                  "local", "--json")
    assert res.returncode == 1, res.stderr
    report = report_of(res.stdout)
    assert "window exceeded" in report["failure"]["error"]
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["maintenance-off"]["status"] == "succeeded"
    assert any(n["event"] == "window.exceeded" for n in report["notifications"])
    state = Path(yaml.safe_load(env.read_text())["state_dir"])
    assert not (state / "hosts" / "web-1" / "var/www/maintenance.flag").exists()
