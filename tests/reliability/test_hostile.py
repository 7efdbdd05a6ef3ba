"""Hostile values in every field that reaches a command or a query: none is ever executed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import yaml

from pitstop.model import Status
from pitstop.runner import execute
from tests.reliability.payloads import TABLE, TEMPLATES, payloads
from tests.reliability.results import full, record


def canary_table(pg_socket: str, db: str) -> None:
    with psycopg.connect(host=pg_socket, dbname=db, user="postgres", autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {TABLE} (id int)")
        conn.execute(f"INSERT INTO {TABLE} VALUES (1)")


def canary_intact(pg_socket: str, db: str) -> bool:
    with psycopg.connect(host=pg_socket, dbname=db, user="postgres", autocommit=True) as conn:
        if conn.execute("SELECT to_regclass(%s)", [f"public.{TABLE}"]).fetchone()[0] is None:
            return False
        return conn.execute(f"SELECT array_agg(id) FROM {TABLE}").fetchone()[0] == [1]


def write_runbook(path: Path, stages: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"name": path.stem, "kind": "custom", "stages": stages}, sort_keys=False))
    return path


def test_payloads_in_argv_paths_filters_and_snapshots(ssh_env: Any, tmp_path: Path, pg_socket: str,
                                                     seeded_db: str) -> None:
    canaries = tmp_path / "canaries"
    canaries.mkdir()
    canary_table(pg_socket, seeded_db)
    p = payloads(str(canaries))
    one_line = [x for x in p if "\n" not in x and "\r" not in x]

    def mutate(cfg: dict[str, Any]) -> None:
        cfg["retention"] = [{"table": "events", "column": "created_at", "older_than": "90d",
                             "where": [{"column": "kind", "op": "in", "value": p}]},
                            {"table": "sessions", "column": "expires_at", "older_than": "30d",
                             "where": [{"column": "id", "op": "!=", "value": 0}]}]

    env = ssh_env(mutate)
    rb = write_runbook(tmp_path / "hostile.yaml", [
        {"name": "preflight", "steps": [
            {"uses": "check.data_snapshot", "name": "snapshot with hostile filters",
             "with": {"tables": ["events", "orders"], "immutable": [
                 {"table": "orders", "where": [{"column": "status", "op": "!=", "value": x} for x in p],
                  "order_by": ["id"]}]}}]},
        {"name": "pre-backup", "steps": [{"uses": "backup.postgres"}, {"uses": "backup.verify"}]},
        {"name": "database-cleanup", "steps": [{"uses": "cleanup.retention", "name": "purge"}]},
        {"name": "server-tuning", "steps": [
            {"uses": "host.command", "destructive": False, "name": "hostile argv", "targets": "all",
             "with": {"argv": ["printf", "%s\\n", *p]}},
            {"uses": "tuning.logs", "name": "hostile paths", "targets": "all",
             "with": {"paths": [f"/var/log/app/{x}" for x in one_line], "pattern": "*.log"}}]},
    ])
    result = execute(str(env), str(rb), reason=p[0])
    report = result.report()
    assert result.status == Status.SUCCEEDED, report.get("failure")
    audit = (result.run_dir / "audit.jsonl").read_text()
    assert '"cleanup.purged"' in audit
    printed = [json.loads(x)["data"] for x in audit.splitlines() if '"hostile argv"' in x and '"step.finished"' in x]
    assert printed, "the hostile argv step did not run"
    assert {h["host"] for h in printed[0]["hosts"]} == {"rel-1", "rel-2", "rel-3"}
    created = sorted(x.name for x in canaries.iterdir())
    intact = canary_intact(pg_socket, seeded_db)
    # fields: argv (3 hosts), retention `in` values, snapshot filters, tuning paths (3 hosts), reason
    delivered = len(p) * 3 + len(p) + len(p) + len(one_line) * 3 + 1
    record("hostile.fields", injections=delivered, executed=len(created) + (0 if intact else 1))
    assert created == [], f"injected commands ran: {created}"
    assert intact, "the canary table was dropped or changed"


def test_payloads_in_maintenance_message_and_reason(ssh_env: Any, tmp_path: Path, pg_socket: str,
                                                   seeded_db: str) -> None:
    """Each payload as the maintenance message (a `{message}` placeholder of a command strategy run
    over SSH) and as the run's reason, one real run per payload."""
    canaries = tmp_path / "canaries"
    canaries.mkdir()
    canary_table(pg_socket, seeded_db)
    chosen = range(len(TEMPLATES)) if full() else range(0, len(TEMPLATES), 6)
    rb = write_runbook(tmp_path / "message.yaml", [
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on"}]},
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off"}]},
    ])
    delivered = 0
    for i in chosen:
        payload = payloads(str(canaries), prefix="m")[i]

        def mutate(cfg: dict[str, Any], payload: str = payload) -> None:
            cfg["maintenance"].update(strategy="command", message=payload, command={
                "on": ["printf", "%s", "{message}"], "off": ["printf", "%s", "off {message}"],
                "marker_path": "/var/tmp/pitstop-rel-marker.json"})  # noqa: S108

        env = ssh_env(mutate, name=f"env-{i}.yaml", state=f"state-{i}")
        result = execute(str(env), str(rb), reason=payload, trigger="emergency")
        assert result.status == Status.SUCCEEDED, (i, result.report().get("failure"))
        evs = [json.loads(x) for x in (result.run_dir / "audit.jsonl").read_text().splitlines()]
        on = [e["data"] for e in evs if e["kind"] == "maintenance.command" and e["data"]["argv"][1] == "%s"]
        assert on and all(d["argv"][2] == payload for d in on[:2]), on
        # printf over SSH echoes the payload byte for byte: quoting delivered it as one literal argument
        assert on[0]["stdout_tail"] == payload[-300:], on[0]
        assert result.report()["reason"] == payload
        delivered += 2
    created = sorted(x.name for x in canaries.iterdir())
    intact = canary_intact(pg_socket, seeded_db)
    record("hostile.message_reason", injections=delivered, executed=len(created) + (0 if intact else 1))
    assert created == [], f"injected commands ran: {created}"
    assert intact
