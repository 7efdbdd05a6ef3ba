"""SIGKILL a real run at stage boundaries and inside stages, then `pitstop resume` it.

For every kill point: at the crash, every host in maintenance has its dead-man's switch armed (the
audit log's ``maintenance.on`` for it names one, so the flag lifts by itself at its TTL); the resume
(the next invocation for the environment) sends one ``run.abandoned`` alert to the ops audience —
checked in the real file channel's output, with the run id and whether maintenance was on — then
completes the run; maintenance is off afterwards, no completed destructive step is repeated (one
backup.created, one cleanup.purged per table across the whole audit log), and every row that had
not expired is still there."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from pitstop.config import load_config
from pitstop.demo import setup_hosts
from tests.conftest import demo_config
from tests.reliability.helpers import cli, kill_when, start
from tests.reliability.helpers import events as read_log
from tests.reliability.results import full, record

# (event kind, occurrence): kill as soon as the audit log holds that many events of that kind.
ALL_POINTS = ([("step.started", n) for n in range(1, 20)] + [("stage.finished", n) for n in range(1, 9)]
              + [("backup.created", 1), ("backup.verified", 1), ("cleanup.purged", 1), ("cleanup.purged", 2),
                 ("maintenance.on", 1), ("maintenance.on", 2), ("maintenance.off", 1), ("tuning.logs", 2)])
FAST_POINTS = [("cleanup.purged", 1), ("maintenance.on", 1), ("stage.finished", 2)]
LIVE = {"events": "created_at > now() - interval '89 days'", "sessions": "expires_at > now() - interval '29 days'"}
HOSTS = ("web-1", "web-2", "app-1")


def live_ids(pg_socket: str, db: str) -> dict[str, set[int]]:
    with psycopg.connect(host=pg_socket, dbname=db, user="postgres") as conn:
        return {t: {r[0] for r in conn.execute(f"SELECT id FROM {t} WHERE {w}")} for t, w in LIVE.items()}


def repeated_purges(events: list[dict[str, Any]]) -> int:
    """Purges of a table that already had a completed purge (``cleanup.purged``) and deleted rows
    again. A resume re-checks an already purged table (``deleted: 0``): that is not a repeat."""
    done: set[str] = set()
    repeats = 0
    for e in events:
        if e["kind"] == "cleanup.purged":
            table = e["data"]["table"]
            if table in done and e["data"].get("deleted", 0) > 0:
                repeats += 1
            done.add(table)
    return repeats


def guarded_at_crash(state: Path, evs: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """Hosts whose maintenance flag is on right after the SIGKILL, and those of them with a dead-man's
    switch armed according to the run's audit log (the others would stay on past the TTL)."""
    on = {h for h in HOSTS if (state / "hosts" / h / "var/www/maintenance.flag").exists()}
    armed = {e["data"]["host"] for e in evs
             if e["kind"] in ("maintenance.deadman_armed", "maintenance.on") and e["data"].get("deadman")}
    return on, on & armed


def abandoned_alerts(state: Path, run_id: str) -> list[dict[str, Any]]:
    """``run.abandoned`` messages for ``run_id`` the ops file channel (``ops-log``) really wrote."""
    path = state / "notifications.jsonl"
    msgs = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    return [m for m in msgs if m["event"] == "run.abandoned" and m["run_id"] == run_id]


def clone(pg_socket: str, template: str) -> str:
    name = f"k_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(host=pg_socket, dbname="postgres", user="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name


def drop(pg_socket: str, name: str) -> None:
    with psycopg.connect(host=pg_socket, dbname="postgres", user="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def crash_and_resume(point: tuple[str, int], base: Path, pg_data_dir: Path, pg_socket: str,
                     template: str) -> dict[str, int]:
    kind, nth = point
    db = clone(pg_socket, template)
    try:
        cfg = demo_config(base / "state", pg_data_dir, db)
        env = base / "env.yaml"
        env.write_text(yaml.safe_dump(cfg, sort_keys=False))
        setup_hosts(load_config(str(env)))
        state = base / "state"
        before = live_ids(pg_socket, db)
        proc = start("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
        run_dir = kill_when(proc, state / "runs",
                            lambda evs: sum(e["kind"] == kind for e in evs) >= nth)
        assert run_dir is not None, f"{point}: the run finished before the kill point"
        at_crash = read_log(run_dir)
        on_at_crash, guarded = guarded_at_crash(state, at_crash)
        unguarded = len(on_at_crash - guarded)
        # SIGKILL lands a few ms after the kill point: a run may have written run.finished by then
        abandoned = not any(e["kind"] == "run.finished" for e in at_crash)
        res = cli("resume", run_dir.name, "--env", str(env), "--engine", "local", "--json")
        assert res.returncode == 0, (point, res.stdout[-2000:], res.stderr[-3000:])
        report = json.loads(Path(json.loads(res.stdout)["report"]).read_text())
        assert report["status"] == "succeeded", (point, report.get("failure"))
        events = [json.loads(x) for x in (run_dir / "audit.jsonl").read_text().splitlines() if x.strip()]
        kinds = [e["kind"] for e in events]
        repeated = max(0, kinds.count("backup.created") - 1) + repeated_purges(events)
        left_on = sum((state / "hosts" / h / "var/www/maintenance.flag").exists() for h in HOSTS)
        after = live_ids(pg_socket, db)
        lost = sum(len(before[t] - after[t]) for t in LIVE)
        assert kinds.count("run.resumed") == 1
        alerts = abandoned_alerts(state, run_dir.name)
        assert len(alerts) == int(abandoned), (point, alerts)  # the resume alerted once, before resuming
        if alerts:
            facts = alerts[0]["data"]
            assert alerts[0]["audience"] == "ops" and alerts[0]["severity"] == "failure"
            assert facts["maintenance_on"] == bool(facts["maintenance_hosts"])
            assert guarded <= set(facts["maintenance_hosts"])  # it names every host left on, with its expiry
            assert all(facts["maintenance_hosts"][h]["expires_at"] for h in guarded)
            assert run_dir.name in alerts[0]["subject"] and kinds.count("run.abandoned") == 1
            assert kinds.index("run.abandoned") < kinds.index("run.resumed")
        return {"kill_points": 1, "left_in_maintenance": int(left_on > 0 or unguarded > 0),
                "repeated_destructive": repeated, "lost_rows": lost, "alerted": len(alerts) == int(abandoned),
                "unguarded": unguarded}
    finally:
        drop(pg_socket, db)


@pytest.mark.parametrize("point", ALL_POINTS if full() else FAST_POINTS, ids=lambda p: f"{p[0]}-{p[1]}")
def test_sigkill_then_resume(point: tuple[str, int], tmp_path: Path, pg_data_dir: Path, pg_socket: str,
                             seeded_db: str) -> None:
    out = crash_and_resume(point, tmp_path, pg_data_dir, pg_socket, seeded_db)
    alerted, unguarded = out.pop("alerted"), out.pop("unguarded")
    record(f"crash.{point[0]}.{point[1]}", **out)
    assert alerted, f"{point}: no abandoned-run alert"
    assert unguarded == 0, f"{point}: a host was in maintenance at the crash without a dead-man's switch"
    assert out["left_in_maintenance"] == 0, f"{point}: maintenance still on after the resume"
    assert out["repeated_destructive"] == 0, f"{point}: a completed destructive step ran twice"
    assert out["lost_rows"] == 0, f"{point}: {out['lost_rows']} live rows lost"


def test_kill_point_count() -> None:
    assert len(ALL_POINTS) >= 20
