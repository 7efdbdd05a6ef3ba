"""The monthly runbook end to end through the real CLI, as a Prefect flow against a real Prefect API,
on the real embedded PostgreSQL and local sandbox hosts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import report_of, run_cli

EXPIRED = {"public.events": 1500, "public.sessions": 400}  # see pitstop/demo.py SEED


def counts(db_conn: Any, dbname: str) -> dict[str, int]:
    with db_conn(dbname) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("events", "sessions", "orders", "users")}


def newest_untouched(db_conn: Any, dbname: str) -> tuple[int, int]:
    with db_conn(dbname) as conn:
        ev = conn.execute("SELECT count(*) FROM events WHERE created_at >= now() - interval '90 days'").fetchone()[0]
        se = conn.execute("SELECT count(*) FROM sessions WHERE expires_at >= now() - interval '30 days'").fetchone()[0]
    return ev, se


def test_monthly_run_as_prefect_flow(make_env: Any, seeded_db: str, db_conn: Any, prefect_api: str,
                                     tmp_path: Path) -> None:
    env = make_env()
    before = counts(db_conn, seeded_db)
    young_before = newest_untouched(db_conn, seeded_db)

    res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "Error flushing" not in res.stderr, res.stderr
    report = report_of(res.stdout)

    # Exactly the expired rows are gone, and no others.
    after = counts(db_conn, seeded_db)
    assert before["events"] - after["events"] == EXPIRED["public.events"]
    assert before["sessions"] - after["sessions"] == EXPIRED["public.sessions"]
    assert after["orders"] == before["orders"] and after["users"] == before["users"]
    assert newest_untouched(db_conn, seeded_db) == young_before

    # The report carries the documented fields.
    for key in ("run_id", "environment", "runbook", "trigger", "reason", "started_at", "finished_at", "status",
                "stages", "notifications", "backup", "cleanup", "maintenance_window"):
        assert key in report, key
    assert report["status"] == "succeeded" and report["trigger"] == "manual" and report["runbook"] == "monthly"
    assert report["cleanup"]["tables"] == EXPIRED
    names = [s["name"] for s in report["stages"]]
    assert names == ["preflight", "pre-backup", "maintenance-on", "database-cleanup", "server-tuning",
                     "maintenance-off", "post-verification", "report"]
    for s in report["stages"]:
        assert s["status"] == "succeeded" and s["started_at"] and s["finished_at"], s
        for step in s["steps"]:
            assert step["status"] == "succeeded", step
    w = report["maintenance_window"]
    assert w["started_at"] and w["ended_at"] and w["duration_s"] is not None
    assert report["backup"]["verified"] is True and len(report["backup"]["sha256"]) == 64
    events = {(n["event"], n["channel"]) for n in report["notifications"]}
    assert {("run.started", "console"), ("run.completed", "ops-log"), ("stage.completed", "ops-log")} <= events
    assert all(n["status"] == "sent" for n in report["notifications"])

    # The file channel received the same notifications, as JSON lines.
    state = Path(yaml.safe_load(env.read_text())["state_dir"])
    lines = [json.loads(x) for x in (state / "notifications.jsonl").read_text().splitlines()]
    assert [m["event"] for m in lines][0] == "run.started" and lines[-1]["event"] == "run.completed"

    # Maintenance mode is off on every web host; logs rotated in the sandboxes.
    run_dir = Path(json.loads(res.stdout)["run_dir"])
    for host in ("web-1", "web-2"):
        assert not (state / "hosts" / host / "var/www/maintenance.flag").exists()
    logs = state / "hosts" / "web-1" / "var/log/app"
    assert sorted(p.name for p in logs.iterdir()) == ["app-3d.log.gz", "app-4d.log.gz", "app-5d.log.gz", "app.log"]
    for name in ("report.json", "report.md", "report.html", "audit.jsonl", "manifest.json"):
        assert (run_dir / name).is_file(), name
    assert run_cli("report", "verify", str(run_dir)).returncode == 0


def test_dump_restores_with_same_counts(make_env: Any, seeded_db: str, db_conn: Any, tmp_path: Path) -> None:
    env = make_env()
    res = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr
    report = report_of(res.stdout)
    dump = Path(report["backup"]["location"])
    manifest = json.loads(dump.with_name(dump.name.replace(".dump", ".manifest.json")).read_text())
    import hashlib

    assert hashlib.sha256(dump.read_bytes()).hexdigest() == report["backup"]["sha256"] == manifest["sha256"]

    scratch = f"{seeded_db}_restore"
    with db_conn("postgres") as conn:
        conn.execute(f'CREATE DATABASE "{scratch}"')
    try:
        import pgserver

        bin_dir = Path(pgserver.__file__).parent / "pginstall" / "bin"
        from tests.conftest import pg_socket  # noqa: F401 - fixture module import for clarity
        with db_conn("postgres") as conn:
            sock = conn.info.host
        subprocess.run([str(bin_dir / "pg_restore"), "-h", sock, "-U", "postgres", "-d", scratch, "--no-owner",
                        str(dump)], check=True, capture_output=True)
        restored = counts(db_conn, scratch)
        assert {f"public.{t}": n for t, n in restored.items()} == manifest["row_counts"]
        # The dump was taken before the purge: it still holds the expired rows.
        assert restored["events"] == counts(db_conn, seeded_db)["events"] + EXPIRED["public.events"]
    finally:
        with db_conn("postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


def test_failing_step_still_lifts_maintenance_and_writes_report(make_env: Any, seeded_db: str, db_conn: Any,
                                                                tmp_path: Path) -> None:
    env = make_env()
    rb = yaml.safe_load(Path("runbooks/monthly.yaml").read_text()) if Path("runbooks/monthly.yaml").exists() else None
    from tests.conftest import ROOT

    rb = yaml.safe_load((ROOT / "runbooks" / "monthly.yaml").read_text())
    tuning = next(s for s in rb["stages"] if s["name"] == "server-tuning")
    tuning["steps"].append({"uses": "host.command", "destructive": False, "name": "broken restart", "targets": "web",
                            "with": {"argv": ["sh", "-c", "echo restart failed >&2; exit 3"]}})
    rb_path = tmp_path / "failing.yaml"
    rb_path.write_text(yaml.safe_dump(rb, sort_keys=False))

    res = run_cli("run", "--env", str(env), "--runbook", str(rb_path), "--engine", "local", "--json")
    assert res.returncode == 1, res.stdout + res.stderr
    report = report_of(res.stdout)
    assert report["status"] == "failed"
    assert report["failure"]["step"] == "broken restart" and "exited 3" in report["failure"]["error"]
    assert "restart failed" in report["failure"]["error"]
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["server-tuning"]["status"] == "failed"
    assert stages["maintenance-off"]["status"] == "succeeded"  # always-finally
    assert stages["post-verification"]["status"] == "skipped"
    state = Path(yaml.safe_load(env.read_text())["state_dir"])
    for host in ("web-1", "web-2"):
        assert not (state / "hosts" / host / "var/www/maintenance.flag").exists()
    sent = {(n["event"], n["status"]) for n in report["notifications"]}
    assert ("run.failed", "sent") in sent and ("stage.failed", "sent") in sent
    run_dir = Path(json.loads(res.stdout)["run_dir"])
    assert "broken restart" in (run_dir / "report.html").read_text()


def test_plan_changes_nothing(make_env: Any, seeded_db: str, db_conn: Any, tmp_path: Path) -> None:
    env = make_env()
    state = Path(yaml.safe_load(env.read_text())["state_dir"])

    def snapshot() -> dict[str, Any]:
        files = {str(p.relative_to(state)): (p.stat().st_mtime_ns, p.stat().st_size)
                 for p in state.rglob("*") if p.is_file()}
        return {"db": counts(db_conn, seeded_db), "files": files}

    before = snapshot()
    res = run_cli("plan", "--env", str(env), "--runbook", "monthly", "--json")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    purge = next(s for s in plan["steps"] if s["uses"] == "cleanup.retention")
    assert any("purge 1500 of 6000 rows" in w for w in purge["would"]), purge["would"]
    assert any("purge 400 of 2000 rows" in w for w in purge["would"]), purge["would"]
    assert purge["phase"] == "before" and purge["destructive"] is True
    assert snapshot() == before


def test_plans_at_once_share_no_folder(make_env: Any, tmp_path: Path) -> None:
    """``plan`` is not a run: it reads facts with its events in a private temporary folder, never a folder
    under the reports directory (one named ``plan`` once was made there and removed, so two plans at once
    removed each other's audit log)."""
    import sys

    from tests.conftest import ROOT

    env = make_env()
    reports = Path(yaml.safe_load(env.read_text())["state_dir"]) / "reports"
    before = sorted(p.name for p in reports.iterdir()) if reports.exists() else []
    procs = [subprocess.Popen([sys.executable, "-m", "pitstop.cli", "plan", "--env", str(env), "--runbook", "monthly",
                               "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for rc, stdout, stderr in results:
        assert rc == 0, stderr
        assert json.loads(stdout)["steps"]
    after = sorted(p.name for p in reports.iterdir()) if reports.exists() else []
    assert after == before


def test_second_run_gets_fresh_id_and_purges_nothing_more(make_env: Any, seeded_db: str, db_conn: Any) -> None:
    env = make_env()
    first = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    second = run_cli("run", "--env", str(env), "--runbook", "monthly", "--engine", "local", "--json")
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    r1, r2 = report_of(first.stdout), report_of(second.stdout)
    assert r1["run_id"] != r2["run_id"]
    assert sum(r2["cleanup"]["tables"].values()) == 0 and r2["status"] == "succeeded"


def test_emergency_runbook_has_post_maintenance_section(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    res = run_cli("emergency", "--env", str(env), "--runbook", "emergency-disk", "--reason", "web-1 /var at 97%",
                  "--expected-downtime", "15m", "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr
    report = report_of(res.stdout)
    assert report["trigger"] == "emergency" and report["reason"] == "web-1 /var at 97%"
    assert report["expected_downtime_s"] == 900
    html = (Path(json.loads(res.stdout)["run_dir"]) / "report.html").read_text()
    assert "post-maintenance" in html.lower() and "web-1 /var at 97%" in html
