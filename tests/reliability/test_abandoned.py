"""Alert at crash: a SIGKILLed run cannot alert for itself, so the next invocation for its environment
finds it (audit log without ``run.finished``, environment lock free) and sends one ``run.abandoned``
alert to the ops audience — idempotent through the notification ledger, retried when a channel
failed — before resuming; nobody alerts while the lock is held (the run may be alive), nor about a
finished run. The alerts are read back from the real file channels' output."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from pitstop.abandoned import alert_abandoned, refuse_beside_open_window, scan
from pitstop.config import load_config
from pitstop.connectors.postgres import Database
from pitstop.locks import EnvironmentLock
from tests.reliability.helpers import cli, events, kill_when, start
from tests.reliability.results import record


def alerts(path: Path, run_id: str) -> list[dict[str, Any]]:
    msgs = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    return [m for m in msgs if m["event"] == "run.abandoned" and m["run_id"] == run_id]


def deliveries(run_dir: Path) -> list[tuple[str, str]]:
    """(channel, status) of every alert delivery recorded in the abandoned run's own audit log."""
    return [(d["channel"], d["status"]) for e in events(run_dir) if e["kind"] == "run.abandoned"
            for d in e["data"]["deliveries"] if d["channel"] != "console"]


def test_abandoned_run_is_alerted_once_then_resumed(make_env: Any, tmp_path: Path) -> None:
    def mutate(cfg: dict[str, Any]) -> None:  # a second ops channel that fails on the first attempt
        cfg["notifications"]["channels"]["ops-pager"] = {"kind": "file", "path": "pager.jsonl", "audiences": ["ops"]}

    env = make_env(mutate)
    state = tmp_path / "state"
    proc = start("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    run_dir = kill_when(proc, state / "runs", lambda evs: sum(e["kind"] == "maintenance.on" for e in evs) >= 2)
    assert run_dir is not None
    cfg = load_config(str(env))
    assert [a.run_id for a in scan(cfg)] == [run_dir.name]

    def listed() -> dict[str, Any]:
        out = cli("report", "list", "--env", str(env), "--json")
        assert out.returncode == 0, out.stderr[-2000:]
        return {r["run_id"]: r for r in json.loads(out.stdout)}

    # `report list` shows the killed run (it has no report.json): abandoned, or running while its id holds the lock
    row = listed()[run_dir.name]
    assert (row["status"], row["runbook"], row["finished_at"]) == ("abandoned", "monthly", None) and row["started_at"]
    with EnvironmentLock(Database(cfg), cfg.name, run_dir.name):
        assert listed()[run_dir.name]["status"] == "running"
    # while something holds the environment lock (a live run would), nobody alerts: the trigger is refused
    lock = EnvironmentLock(Database(cfg), cfg.name, "someone-else")
    lock.acquire()
    try:
        refused = cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    finally:
        lock.release()
    assert refused.returncode == 3, refused.stderr[-2000:]
    assert not alerts(state / "notifications.jsonl", run_dir.name)
    pager = state / "pager.jsonl"
    pager.rename(state / "pager-before-crash.jsonl")
    pager.mkdir()  # the pager channel cannot write now: its delivery fails

    # two invocations at once, then a third: one alert per channel, the failed one retried later
    threads = [threading.Thread(target=alert_abandoned, args=(cfg,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    log_alerts = alerts(state / "notifications.jsonl", run_dir.name)
    assert len(log_alerts) == 1, log_alerts
    facts = log_alerts[0]["data"]
    assert log_alerts[0]["audience"] == "ops" and log_alerts[0]["severity"] == "failure"
    assert facts["maintenance_on"] and sorted(facts["maintenance_hosts"]) == ["web-1", "web-2"]
    assert all(m["expires_at"] and m["deadman"] for m in facts["maintenance_hosts"].values()), facts
    # the last step that started before the kill (the kill lands a little after the trigger event)
    last = [e["data"] for e in events(run_dir) if e["kind"] == "step.started"][-1]
    assert (facts["stage"], facts["step"]) == (last["stage"], last["step"])
    assert "dead-man switch armed" in log_alerts[0]["body"] and run_dir.name in log_alerts[0]["body"]
    # ops-log sent once; the pager failed (the second invocation, finding it failed, tried again)
    assert sorted(set(deliveries(run_dir))) == [("ops-log", "sent"), ("ops-pager", "failed")]
    assert deliveries(run_dir).count(("ops-log", "sent")) == 1

    pager.rmdir()
    alert_abandoned(cfg)  # the next invocation: the pager gets it now, ops-log is not sent again
    assert len(alerts(state / "notifications.jsonl", run_dir.name)) == 1
    assert len(alerts(state / "pager.jsonl", run_dir.name)) == 1

    res = cli("resume", run_dir.name, "--env", str(env), "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(alerts(state / "notifications.jsonl", run_dir.name)) == 1  # the resume did not re-alert
    assert len(alerts(state / "pager.jsonl", run_dir.name)) == 1
    assert deliveries(run_dir).count(("ops-log", "sent")) == deliveries(run_dir).count(("ops-pager", "sent")) == 1
    kinds = [e["kind"] for e in events(run_dir)]
    assert "run.finished" in kinds[kinds.index("run.resumed"):]
    assert scan(cfg) == [] and alert_abandoned(cfg) == []  # finished now: never alerted again
    assert not list(state.rglob("maintenance.flag"))
    record("abandoned")


def test_a_new_run_is_refused_while_a_dead_run_left_maintenance_on(make_env: Any, tmp_path: Path) -> None:
    """The environment lock is free once a run's process is dead, but its maintenance page may still be up: a
    new run (the next schedule, a manual one) is refused like a locked one (exit 3, nothing of it created,
    the command to finish the dead run named) until the dead run is resumed; then runs go on as before."""
    env = make_env()
    state = tmp_path / "state"
    proc = start("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    run_dir = kill_when(proc, state / "runs", lambda evs: sum(e["kind"] == "maintenance.on" for e in evs) >= 2)
    assert run_dir is not None
    folders = sorted(p.name for p in (state / "runs").iterdir())
    for runbook in ("monthly", "quarterly"):
        refused = cli("run", "--env", str(env), "--runbook", runbook, "--engine", "local", "--json")
        assert refused.returncode == 3, refused.stderr[-2000:]
        text = " ".join(refused.stderr.split())
        assert f"pitstop resume {run_dir.name} --env" in text and "maintenance mode on" in text, text
        assert "Traceback" not in refused.stderr
    through_prefect = cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "prefect")
    assert through_prefect.returncode == 3, through_prefect.stderr[-2000:]  # its flow run ends Refused
    assert f"pitstop resume {run_dir.name} --env" in through_prefect.stderr
    assert "Encountered exception" not in through_prefect.stderr and "Traceback" not in through_prefect.stderr
    assert sorted(p.name for p in (state / "runs").iterdir()) == folders  # nothing of the refused runs
    assert len(alerts(state / "notifications.jsonl", run_dir.name)) == 1  # ops heard of the dead run, once
    assert list(state.rglob("maintenance.flag"))  # the dead run's page is still up: nobody lifted it behind it

    # a log whose chain is broken says nothing that can be trusted, and cannot be resumed: it does not block
    log = run_dir / "audit.jsonl"
    intact = log.read_bytes()
    log.write_bytes(intact.replace(b'"maintenance.on"', b'"maintenance.0n"', 1))
    cfg = load_config(str(env))
    assert [a.run_id for a in scan(cfg) if a.maintenance_on] == [run_dir.name]
    refuse_beside_open_window(cfg, scan(cfg))  # does not raise
    log.write_bytes(intact)

    res = cli("resume", run_dir.name, "--env", str(env), "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    assert not list(state.rglob("maintenance.flag"))
    again = cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
