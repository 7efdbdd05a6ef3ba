"""A window only when needed (issue #22): exclusive steps say from facts whether they have work; with none,
maintenance mode is never switched on, customers hear nothing, and plan, console and report say so.
Real engine: embedded PostgreSQL, sandbox hosts, file notification channels."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitstop import runner
from pitstop.audit import read_events
from tests.conftest import run_cli

FLAG = "var/www/maintenance.flag"


def _kinds(run_dir: Path) -> list[str]:
    return [e["kind"] for e in read_events(run_dir / "audit.jsonl")]


def _events(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in read_events(run_dir / "audit.jsonl") if e["kind"] == kind]


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class FlagWatcher:
    """Polls every web host's flag path while a run goes on: did the flag ever exist?"""

    def __init__(self, roots: list[Path]):
        self.paths = [r / FLAG for r in roots]
        self.seen = False
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if any(p.exists() for p in self.paths):
                self.seen = True
            self._stop.wait(0.001)

    def __enter__(self) -> FlagWatcher:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def _web_roots(env: Path) -> list[Path]:
    cfg = yaml.safe_load(env.read_text())
    return [Path(cfg["state_dir"]) / cfg["hosts"][h]["root"] for h in cfg["groups"]["web"]]


def test_second_monthly_run_needs_no_window(make_env: Any) -> None:
    env = make_env()
    state = Path(yaml.safe_load(env.read_text())["state_dir"])
    first = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    assert first.returncode == 0, first.stderr
    run1 = Path(json.loads(first.stdout)["run_dir"])
    # the first run has work inside the window (logs rotated -> reload application): the window opens
    assert "maintenance.on" in _kinds(run1) and "window.opened" in _kinds(run1)
    customers_before = _lines(state / "customers.jsonl")
    assert {m["event"] for m in customers_before} >= {"run.started", "run.completed"}
    ops_before = len(_lines(state / "notifications.jsonl"))

    with FlagWatcher(_web_roots(env)) as watcher:
        second = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local")
    assert second.returncode == 0, second.stderr
    assert not watcher.seen  # the flag never existed during the second run
    run2 = max((state / "runs").iterdir(), key=lambda p: p.name)
    kinds = _kinds(run2)
    assert "maintenance.on" not in kinds and "maintenance.deadman_armed" not in kinds and "window.opened" not in kinds
    assert "window.not_needed" in kinds and _events(run2, "window.decision")[0]["window_needed"] is False
    skipped = {d["step"]: d["reason"] for d in _events(run2, "step.skipped")}
    assert skipped["maintenance page on"] == skipped["maintenance page off"] == "no window needed"
    assert skipped["reload application"].startswith("no work:")
    assert "no window needed" in second.stdout  # the console says so
    report = json.loads((run2 / "report.json").read_text())
    assert report["status"] == "succeeded" and report["verification"]["status"] == "passed"
    w = report["maintenance_window"]
    assert w["needed"] is False and w["duration_s"] is None and "no exclusive step has work" in w["not_needed_why"]
    assert "No window needed" in (run2 / "report.md").read_text()
    assert 'id="no-window"' in (run2 / "report.html").read_text()
    # customers heard nothing of the second run; ops still got its start and end
    assert _lines(state / "customers.jsonl") == customers_before
    ops = [m for m in _lines(state / "notifications.jsonl")[ops_before:]]
    assert {"run.started", "run.completed"} <= {m["event"] for m in ops}
    feed = json.loads((state / "status" / "status.json").read_text())  # the public status feed says so too
    assert feed["completed"][0]["run_id"] == run2.name and feed["completed"][0]["window_needed"] is False
    assert feed["completed"][1]["window_needed"] is True
    # the backup rule defaults to `always`: the second run still took and verified one
    assert report["backup"] and report["backup"]["verified"]

    plan = run_cli("plan", "--env", str(env), "--runbook", "monthly")
    assert plan.returncode == 0 and "no window needed" in plan.stdout, plan.stdout
    plan_json = json.loads(run_cli("plan", "--env", str(env), "--runbook", "monthly", "--json").stdout)
    assert plan_json["decision"]["window_needed"] is False
    reload = next(s for s in plan_json["steps"] if s["label"] == "reload application")
    assert reload["work"]["answer"] == "no"


def _retention_runbook(tmp_path: Path, name: str = "inside.yaml", extra: list[dict[str, Any]] | None = None,
                       backup: bool = False) -> Path:
    stages: list[dict[str, Any]] = []
    if backup:
        stages.append({"name": "pre-backup", "steps": [{"uses": "backup.postgres"}, {"uses": "backup.verify"}]})
    stages += [
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on", "name": "on"}]},
        {"name": "database-cleanup", "steps": [{"uses": "cleanup.retention", "name": "purge", "window": "inside"},
                                               *(extra or [])]},
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off", "name": "off"}]},
        {"name": "post-verification", "steps": [{"uses": "check.maintenance_off", "name": "flag gone"}]}]
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"name": "inside", "kind": "monthly", "stages": stages}, sort_keys=False))
    return path


def _expire_rows(db_conn: Any, dbname: str, n: int = 3) -> None:
    with db_conn(dbname) as conn:
        conn.execute("INSERT INTO events (user_id, kind, created_at) SELECT 1, 'old', now() - interval '200 days' "
                     "FROM generate_series(1, %s)", [n])


def test_rows_needing_exclusive_access_open_the_window_and_none_do_not(make_env: Any, tmp_path: Path,
                                                                        db_conn: Any, seeded_db: str) -> None:
    env = make_env()
    rb = _retention_runbook(tmp_path)
    go: dict[str, Any] = {"accept_unverified_backup": True, "reason": "window test without a backup"}
    first = runner.execute(str(env), str(rb), **go)
    assert first.status.value == "succeeded"
    assert "window.opened" in _kinds(first.run_dir) and first.report()["cleanup"]["rows_purged"] > 0
    second = runner.execute(str(env), str(rb), **go)
    kinds = _kinds(second.run_dir)
    assert "maintenance.on" not in kinds and "window.opened" not in kinds
    assert second.report()["maintenance_window"]["needed"] is False
    purge = next(d for d in _events(second.run_dir, "step.skipped") if d["step"] == "purge")
    assert "no work" in purge["reason"]
    _expire_rows(db_conn, seeded_db)  # new facts: rows past retention again -> the window opens again
    third = runner.execute(str(env), str(rb), **go)
    assert "window.opened" in _kinds(third.run_dir) and third.report()["cleanup"]["rows_purged"] == 3


def test_facts_changing_before_the_window_never_do_exclusive_work_outside_one(make_env: Any, tmp_path: Path) -> None:
    """Decided "no window" at the start; an online-safe step then makes the exclusive step's guard fail: at
    step time it has work, but no window is open: skipped, deviation recorded, nothing done."""
    env = make_env()
    doc = {"name": "late", "stages": [
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on", "name": "on"}]},
        {"name": "server-tuning", "steps": [
            {"uses": "host.command", "name": "remove marker", "destructive": False, "targets": "app",
             "window": "outside", "with": {"argv": ["rm", "-f", "marker"]}},
            {"uses": "host.command", "name": "exclusive touch", "destructive": False, "targets": "app",
             "with": {"argv": ["touch", "done-inside"], "creates": "/marker"}}]},
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off", "name": "off"}]},
        {"name": "post-verification", "steps": [{"uses": "check.maintenance_off", "name": "flag gone"}]}]}
    rb = tmp_path / "late.yaml"
    rb.write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = yaml.safe_load(env.read_text())
    app = Path(cfg["state_dir"]) / cfg["hosts"]["app-1"]["root"]
    (app / "marker").write_text("guard holds: the exclusive step has nothing to do")
    res = runner.execute(str(env), str(rb))
    assert res.status.value == "succeeded"
    kinds = _kinds(res.run_dir)
    assert _events(res.run_dir, "window.decision")[0]["window_needed"] is False
    assert "maintenance.on" not in kinds and "window.opened" not in kinds
    assert not (app / "marker").exists() and not (app / "done-inside").exists()  # nothing exclusive was done
    dev = _events(res.run_dir, "plan.deviation")
    assert len(dev) == 1 and dev[0]["step"] == "exclusive touch"
    skipped = next(d for d in _events(res.run_dir, "step.skipped") if d["step"] == "exclusive touch")
    assert "no window is open" in skipped["reason"]
    assert any(d["kind"] == "plan.deviation" for d in res.report()["deviations"])
    sent = {(n["event"], n["audience"]) for n in res.report()["notifications"]}
    assert ("plan.deviation", "ops") in sent and not any(a == "customers" for _, a in sent)  # ops told, nobody else


def _with_backup_when(value: str) -> Any:
    def mutate(cfg: dict[str, Any]) -> None:
        cfg.setdefault("backup", {})["when"] = value
    return mutate


def test_backup_when_before_destructive_work(make_env: Any, tmp_path: Path, db_conn: Any, seeded_db: str) -> None:
    env = make_env(_with_backup_when("before_destructive_work"))
    rb = _retention_runbook(tmp_path, backup=True)
    first = runner.execute(str(env), str(rb))  # expired rows: destructive work, so a verified backup first
    assert first.status.value == "succeeded", first.report()["failure"]
    assert first.report()["backup"]["verified"] and first.report()["cleanup"]["rows_purged"] > 0
    second = runner.execute(str(env), str(rb))  # nothing destructive to do: no backup, and no gate needed
    assert second.status.value == "succeeded", second.report()["failure"]
    kinds = _kinds(second.run_dir)
    assert "backup.created" not in kinds and "gate.overridden" not in kinds
    skipped = {d["step"]: d["reason"] for d in _events(second.run_dir, "step.skipped")}
    assert "before_destructive_work" in skipped["backup.postgres"] and "backup.verify" in skipped
    assert second.report()["backup"] is None


def test_backup_when_always_takes_one_even_without_work(make_env: Any, tmp_path: Path) -> None:
    env = make_env(_with_backup_when("always"))
    rb = _retention_runbook(tmp_path, backup=True)
    runner.execute(str(env), str(rb))
    second = runner.execute(str(env), str(rb))
    assert second.status.value == "succeeded"
    assert "window.opened" not in _kinds(second.run_dir)  # no window, but the backup still follows `always`
    assert second.report()["backup"]["verified"]


def test_destructive_work_appearing_without_a_backup_is_refused_by_the_gate(make_env: Any, tmp_path: Path) -> None:
    """backup.when: before_destructive_work decided "no backup"; a destructive step finds work at step time:
    fail safe — the verified-backup gate refuses it and nothing destructive runs."""
    env = make_env(_with_backup_when("before_destructive_work"))
    doc = {"name": "gate", "stages": [
        {"name": "pre-backup", "steps": [{"uses": "backup.postgres"}, {"uses": "backup.verify"}]},
        {"name": "server-tuning", "steps": [
            {"uses": "host.command", "name": "remove marker", "destructive": False, "targets": "app",
             "window": "outside", "with": {"argv": ["rm", "-f", "marker"]}},
            {"uses": "host.command", "name": "destroy", "destructive": True, "targets": "app", "window": "outside",
             "with": {"argv": ["touch", "destroyed"], "creates": "/marker"}}]}]}
    rb = tmp_path / "gate.yaml"
    rb.write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = yaml.safe_load(env.read_text())
    app = Path(cfg["state_dir"]) / cfg["hosts"]["app-1"]["root"]
    (app / "marker").write_text("x")
    res = runner.execute(str(env), str(rb))
    assert res.status.value == "failed"
    report = res.report()
    assert report["failure"]["step"] == "destroy" and report["failure"]["error_type"] == "GateRefused"
    assert not (app / "destroyed").exists() and "backup.created" not in _kinds(res.run_dir)
    assert [d["step"] for d in _events(res.run_dir, "plan.deviation")] == ["destroy"]


def test_bad_backup_when_is_exit_2_with_file_and_line(make_env: Any) -> None:
    env = make_env()  # make_env validates its config: the bad value is written afterwards
    cfg = yaml.safe_load(env.read_text())
    cfg.setdefault("backup", {})["when"] = "sometimes"
    env.write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = run_cli("validate", "--env", str(env), "--runbook", "monthly")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    out = res.stdout + res.stderr
    line = next(i for i, text in enumerate(env.read_text().splitlines(), 1) if "sometimes" in text)
    assert f"{env}:{line} at backup.when" in out and "before_destructive_work" in out, out


def test_only_if_changed_is_validated(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    doc = {"name": "bad", "stages": [
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on"}]},
        {"name": "server-tuning", "steps": [
            {"uses": "host.command", "destructive": False, "targets": "app", "only_if_changed": ["nope"],
             "with": {"argv": ["true"]}}]},
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off"}]},
        {"name": "post-verification", "steps": [{"uses": "check.postgres_connect", "id": "late"}]}]}
    rb = tmp_path / "bad.yaml"
    rb.write_text(yaml.safe_dump(doc, sort_keys=False))
    res = run_cli("validate", "--env", str(env), "--runbook", str(rb))
    assert res.returncode == 2 and "only_if_changed: unknown step id 'nope'" in res.stdout + res.stderr
    doc["stages"][1]["steps"][0]["only_if_changed"] = ["late"]  # a step that runs after it
    rb.write_text(yaml.safe_dump(doc, sort_keys=False))
    res = run_cli("validate", "--env", str(env), "--runbook", str(rb))
    assert res.returncode == 2 and "'late' must have finished before this step" in res.stdout + res.stderr
    assert f"{rb}:" in res.stdout + res.stderr


def test_plan_probe_failure_counts_as_work(make_env: Any, tmp_path: Path, db_conn: Any, seeded_db: str) -> None:
    """A probe that cannot tell (the table is gone) answers unknown, which counts as work: the window opens."""
    env = make_env()
    with db_conn(seeded_db) as conn:
        conn.execute("DROP TABLE sessions")
    rb = _retention_runbook(tmp_path)
    res = run_cli("plan", "--env", str(env), "--runbook", str(rb), "--json")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    purge = next(s for s in plan["steps"] if s["label"] == "purge")
    assert purge["work"]["answer"] == "unknown" and plan["decision"]["window_needed"] is True



# -- property: over small generated platforms, the window opens iff some exclusive step has work ---------------

PLATFORMS = st.fixed_dictionaries({
    "row_ages": st.lists(st.sampled_from([1, 5, 20, 45, 100, 200]), max_size=4),
    "older_than": st.sampled_from([10, 30, 60, 150]),
    "retention_inside": st.booleans(),
    "log_ages": st.tuples(*(st.lists(st.sampled_from([0, 5]), max_size=2) for _ in range(2))),
    "logs_inside": st.booleans(),
    "reload": st.booleans(),  # an exclusive reload, only_if_changed: [logs]
})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(platform=PLATFORMS)
def test_window_opens_iff_an_exclusive_step_has_work(platform: dict[str, Any], make_env: Any, tmp_path: Path,
                                                     db_conn: Any, seeded_db: str) -> None:
    env = make_env(name="prop-env.yaml")
    cfg = yaml.safe_load(env.read_text())
    cfg["retention"] = [{"table": "prop_rows", "column": "created_at", "older_than": f"{platform['older_than']}d",
                         "max_share": 1.0}]
    env.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with db_conn(seeded_db) as conn:
        conn.execute("DROP TABLE IF EXISTS prop_rows")
        conn.execute("CREATE TABLE prop_rows (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL)")
        for age in platform["row_ages"]:
            conn.execute("INSERT INTO prop_rows (created_at) VALUES (now() - make_interval(days => %s))", [age])
    state = Path(cfg["state_dir"])
    for host, spec in cfg["hosts"].items():
        logs = state / spec["root"] / "var" / "log" / "app"
        for f in logs.glob("*"):
            f.unlink()
        ages = platform["log_ages"][["web-1", "web-2"].index(host)] if host in ("web-1", "web-2") else []
        for i, age in enumerate(ages):
            f = logs / f"gen-{i}.log"
            f.write_text("x\n" * 10)
            t = time.time() - age * 86400
            os.utime(f, (t, t))
    logs_step: dict[str, Any] = {"uses": "tuning.logs", "name": "logs", "id": "logs", "targets": "web",
                                 "window": "inside" if platform["logs_inside"] else "outside",
                                 "with": {"paths": ["/var/log/app"], "compress_after_days": 1, "delete_after_days": 30}}
    tuning = [logs_step]
    if platform["reload"]:
        tuning.append({"uses": "host.command", "name": "reload", "destructive": False, "targets": "app",
                       "only_if_changed": ["logs"], "after": ["logs"], "with": {"argv": ["touch", "reloaded"]}})
    doc = {"name": "prop", "stages": [
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on", "name": "on"}]},
        {"name": "database-cleanup", "steps": [{"uses": "cleanup.retention", "name": "purge",
                                                "window": "inside" if platform["retention_inside"] else "outside"}]},
        {"name": "server-tuning", "steps": tuning},
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off", "name": "off"}]}]}
    rb = tmp_path / f"prop-{uuid.uuid4().hex[:6]}.yaml"
    rb.write_text(yaml.safe_dump(doc, sort_keys=False))

    rows_work = any(age > platform["older_than"] for age in platform["row_ages"])
    logs_work = any(age == 5 for ages in platform["log_ages"] for age in ages)
    exclusive = platform["retention_inside"] or platform["logs_inside"] or platform["reload"]
    # a window with no exclusive step at all is the one the runbook asks for: it opens as written
    expected = not exclusive or ((platform["retention_inside"] and rows_work) or (platform["logs_inside"] and logs_work)
                                 or (platform["reload"] and logs_work))
    res = runner.execute(str(env), str(rb), accept_unverified_backup=True, reason="property test")
    assert res.status.value == "succeeded", res.report()["failure"]
    kinds = _kinds(res.run_dir)
    assert ("window.opened" in kinds) == expected and ("maintenance.on" in kinds) == expected, platform
    assert ("window.not_needed" in kinds) == (not expected)


def test_a_resumed_run_keeps_its_no_window_decision(make_env: Any) -> None:
    """Killed (SIGKILL) after its backup, a run that needed no window is resumed: the first attempt's decision
    is kept (customers still hear nothing), maintenance mode is never switched on."""
    from tests.reliability.helpers import kill_when, start

    env = make_env()
    state = Path(yaml.safe_load(env.read_text())["state_dir"])
    first = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    assert first.returncode == 0, first.stderr
    customers = _lines(state / "customers.jsonl")
    proc = start("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    killed = kill_when(proc, state / "runs", lambda evs: any(e["kind"] == "backup.created" for e in evs)
                       and not any(e["kind"] == "run.finished" for e in evs))
    assert killed is not None
    resumed = run_cli("resume", killed.name, "--env", str(env), "--engine", "local", "--json")
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
    decisions = _events(killed, "window.decision")
    assert [d["window_needed"] for d in decisions] == [False, False] and decisions[1]["recalled"] is True
    kinds = _kinds(killed)
    assert "maintenance.on" not in kinds and "window.opened" not in kinds and "window.not_needed" in kinds
    assert _lines(state / "customers.jsonl") == customers
    assert json.loads((killed / "report.json").read_text())["maintenance_window"]["needed"] is False


def test_a_partition_to_drop_is_work_and_none_is_not(make_env: Any, tmp_path: Path, db_conn: Any,
                                                       seeded_db: str) -> None:
    """`partitions: drop_only`: a leaf wholly past the cutoff (even an empty one) is work; once it is gone,
    rows past the cutoff in a partition that stays are not (drop_only keeps them)."""
    with db_conn(seeded_db) as conn:
        conn.execute("CREATE TABLE plog (id bigint, created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at)")
        conn.execute("CREATE TABLE plog_old PARTITION OF plog FOR VALUES FROM ('2000-01-01') TO ('2001-01-01')")
        conn.execute("CREATE TABLE plog_rest PARTITION OF plog FOR VALUES FROM ('2001-01-01') TO ('2200-01-01')")
        conn.execute("INSERT INTO plog VALUES (1, now()), (2, now() - interval '400 days')")
    env = make_env(lambda cfg: cfg.update(retention=[{"table": "plog", "column": "created_at", "older_than": "30d",
                                                      "partitions": "drop_only", "max_share": 1.0}]))
    rb = _retention_runbook(tmp_path)

    def purge_work() -> dict[str, Any]:
        res = run_cli("plan", "--env", str(env), "--runbook", str(rb), "--json")
        assert res.returncode == 0, res.stderr
        plan = json.loads(res.stdout)
        return {**next(s for s in plan["steps"] if s["label"] == "purge")["work"],
                "window": plan["decision"]["window_needed"]}

    first = purge_work()
    assert (first["answer"], first["window"]) == ("yes", True) and "1 partition(s) to detach and drop" in first["why"]
    with db_conn(seeded_db) as conn:
        conn.execute("DROP TABLE plog_old")
    after = purge_work()
    assert (after["answer"], after["window"]) == ("no", False) and "drop_only" in after["why"]
