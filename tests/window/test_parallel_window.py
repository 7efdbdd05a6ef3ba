"""In-window parallelism, dependencies, forecast and the report's critical path — on the real engine
(embedded PostgreSQL, local hosts), reading the order of things off the audit log's timestamps."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from pitstop import runner
from pitstop.audit import read_events
from pitstop.config import load_config
from pitstop.plan import Phase, build_plan, forecast_window
from pitstop.runbook import load_runbook
from tests.conftest import run_cli


def _cmd(name: str, argv: list[str], **extra: Any) -> dict[str, Any]:
    return {"uses": "host.command", "destructive": False,
            "name": name, "targets": "app", "with": {"argv": argv}, **extra}


def _runbook(tmp_path: Path, tuning: list[dict[str, Any]], name: str = "par.yaml") -> Path:
    doc = {"name": "par", "stages": [
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on", "name": "on"}]},
        {"name": "server-tuning", "steps": tuning},
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off", "name": "off"}]},
        {"name": "post-verification", "steps": [
            {"uses": "check.maintenance_off", "name": "flag gone"},
            {"uses": "check.postgres_connect", "name": "db answers"},
            {"uses": "check.disk_free", "name": "disk", "with": {"path": "/", "min_free_pct": 1}}]},
    ]}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _intervals(run_dir: Path) -> dict[str, tuple[float, float]]:
    start: dict[str, float] = {}
    out: dict[str, tuple[float, float]] = {}
    for e in read_events(run_dir / "audit.jsonl"):
        t = datetime.fromisoformat(e["ts"]).timestamp()
        if e["kind"] == "step.started":
            start[e["data"]["step"]] = t
        elif e["kind"] == "step.finished":
            out[e["data"]["step"]] = (start[e["data"]["step"]], t)
    return out


def _kinds(run_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    return [(e["kind"], e["data"]) for e in read_events(run_dir / "audit.jsonl")]


def test_independent_steps_overlap_and_dependencies_hold(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    rb = _runbook(tmp_path, [
        _cmd("sleep a", ["sleep", "0.6"], id="a"),
        _cmd("sleep b", ["sleep", "0.6"], id="b", after=[]),  # independent of a
        _cmd("after a", ["true"], after=["a"]),
        _cmd("in order", ["true"]),  # no after: waits for the previous undeclared step ("sleep a")
        _cmd("after both", ["true"], after=["a", "b"]),
    ])
    res = runner.execute(str(env), str(rb))
    assert res.status.value == "succeeded"
    iv = _intervals(res.run_dir)
    (a0, a1), (b0, b1) = iv["sleep a"], iv["sleep b"]
    assert max(a0, b0) < min(a1, b1), "the two independent sleeps did not overlap"
    assert iv["after a"][0] >= a1 and iv["in order"][0] >= a1
    assert iv["after both"][0] >= max(a1, b1)
    # maintenance off strictly last inside the window, after every in-window step
    assert iv["off"][0] >= max(end for name, (_, end) in iv.items() if name not in ("on", "off", "flag gone",
                                                                                    "db answers", "disk"))
    # post-verification checks are read-only: they ran concurrently, each check event names its own step
    checks = [d for k, d in _kinds(res.run_dir) if k == "check"]
    assert {(c["name"], c["step"]) for c in checks} >= {("maintenance_off", "flag gone"),
                                                        ("postgres_connect", "db answers")}
    report = res.report()
    win = report["in_window"]
    assert [c["step"] for c in win["critical_path"]][0] == "on" and win["critical_path"][-1]["step"] == "off"
    assert {"sleep a", "sleep b"} & {c["step"] for c in win["critical_path"]}
    why = {s["step"]: s["why"] for s in win["steps"]}
    assert why["sleep b"] == "declared exclusive (needs the window)" and why["on"] == "opens the window"
    md = (res.run_dir / "report.md").read_text()
    assert "## Inside the maintenance window" in md and "Critical path" in md


def test_failing_in_window_step_still_lifts_maintenance_and_reports(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    rb = _runbook(tmp_path, [
        _cmd("slow ok", ["sleep", "0.4"], id="slow"),
        _cmd("fails", ["false"], id="bad", after=[]),
        _cmd("needs bad", ["true"], after=["bad"]),
    ])
    res = runner.execute(str(env), str(rb))
    assert res.status.value == "failed"
    events = _kinds(res.run_dir)
    finished = {d["step"]: d["status"] for k, d in events if k == "step.finished"}
    skipped = {d["step"] for k, d in events if k == "step.skipped"}
    assert finished["fails"] == "failed" and finished["slow ok"] == "succeeded"  # running work finishes
    assert "needs bad" in skipped and finished["off"] == "succeeded"
    kinds = [k for k, _ in events]
    off_done = max(i for i, (k, d) in enumerate(events) if k == "step.finished" and d["step"] == "off")
    tuning_done = [i for i, (k, d) in enumerate(events) if k == "step.finished" and d["stage"] == "server-tuning"]
    assert tuning_done and all(i < off_done for i in tuning_done)
    assert "window.closed" in kinds
    cfg = load_config(str(env))
    for host in cfg.group_hosts("web"):
        assert not (cfg.resolve(cfg.hosts[host].root) / "var/www/maintenance.flag").exists()
    report = res.report()
    assert report["status"] == "failed" and report["failure"]["step"] == "fails"
    assert (res.run_dir / "report.html").is_file()


def test_unknown_id_and_cycle_exit_2_with_file_line(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    unknown = _runbook(tmp_path, [_cmd("x", ["true"], id="x"), _cmd("y", ["true"], after=["nope"])], "unknown.yaml")
    res = run_cli("plan", "--env", str(env), "--runbook", str(unknown))
    assert res.returncode == 2
    line = next(n for n, text in enumerate(unknown.read_text().splitlines(), 1) if "nope" in text)
    assert f"{unknown}:{line}" in res.stderr and "unknown step id 'nope'" in res.stderr
    cycle = _runbook(tmp_path, [_cmd("p", ["true"], id="p", after=["q"]), _cmd("q", ["true"], id="q", after=["p"])],
                     "cycle.yaml")
    res = run_cli("run", "--env", str(env), "--runbook", str(cycle), "--engine", "local")
    assert res.returncode == 2 and "dependency cycle: p → q → p" in res.stderr
    assert f"{cycle}:" in res.stderr
    later = _runbook(tmp_path, [_cmd("z", ["true"], after=["late"])], "later.yaml")
    doc = yaml.safe_load(later.read_text())
    doc["stages"][3]["steps"][0]["id"] = "late"
    later.write_text(yaml.safe_dump(doc, sort_keys=False))
    res = run_cli("plan", "--env", str(env), "--runbook", str(later))
    assert res.returncode == 2 and "runs later than this step" in res.stderr
    cfg = load_config(str(env))
    runs = cfg.resolve(cfg.reports.dir)
    assert not runs.exists() or not any(runs.iterdir())  # refused before anything ran


def test_forecast_uses_estimates_and_the_longest_chain(tmp_path: Path) -> None:
    cfg = load_config("demo")
    rb_path = _runbook(tmp_path, [
        _cmd("long", ["true"], id="long", estimate="40s"),
        _cmd("short", ["true"], id="short", after=[], estimate="10s"),
        _cmd("tail", ["true"], after=["short"], estimate="20s"),
    ])
    doc = yaml.safe_load(rb_path.read_text())
    doc["stages"][0]["steps"][0]["estimate"] = "5s"
    rb_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    plan = build_plan(cfg, load_runbook(str(rb_path), cfg))
    f = forecast_window(plan)
    assert f.seconds == 45.0  # on (5) + max(long 40, short 10 + tail 20) + off (unknown: 0)
    assert f.critical_path == ["maintenance-on/0", "long", "maintenance-off/0"]
    assert f.sources["maintenance-off/0"] == "unknown" and f.sources["long"] == "estimate"
    f2 = forecast_window(plan, history={"server-tuning/short": 30.0})
    assert f2.seconds == 55.0 and f2.critical_path[1:3] == ["short", "server-tuning/2"]
    assert [s.label for s in plan.phase(Phase.WINDOW)][-1] == "off"


def test_plan_cli_shows_prediction_and_critical_path(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    rb = _runbook(tmp_path, [_cmd("long", ["true"], id="long", estimate="40s"),
                             _cmd("short", ["true"], after=[], estimate="10s")])
    res = run_cli("plan", "--env", str(env), "--runbook", str(rb))
    assert res.returncode == 0, res.stderr
    assert "predicted in-window time: 40.0s" in res.stdout
    assert "critical path: on → long → off" in res.stdout
    res = run_cli("plan", "--env", str(env), "--runbook", str(rb), "--json")
    data = json.loads(res.stdout)
    assert data["forecast"]["critical_path"] == ["maintenance-on/0", "long", "maintenance-off/0"]
