"""Retention pruning, the destructive-step gate through the CLI, and restore into a new database."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import psycopg

from pitstop.backup.catalog import BackupEntry, list_backups, plan_prune
from pitstop.backup.steps import (
    BackupParams,
    PruneParams,
    VerifyParams,
    backup_postgres,
    backup_prune,
    backup_verify,
)
from pitstop.config import BackupConfig
from tests.backup.backup_helpers import SECRET_ENV, s3_storage, write_runbook
from tests.conftest import report_of, run_cli


def entry(run_id: str, kind: str, day: int, verified: bool = False) -> BackupEntry:
    return BackupEntry(run_id=run_id, kind=kind, database="db", started_at=f"2026-01-{day:02d}T00:00:00",
                       size=1, sha256="x", key=f"{run_id}.dump", manifest_key="m", location="l",
                       verified=verified)


def test_prune_policy_keeps_counts_per_kind_and_the_newest_verified() -> None:
    items = sorted([entry("m1", "monthly", 1, verified=True), entry("m2", "monthly", 2),
                    entry("m3", "monthly", 3),
                    entry("q1", "quarterly", 4, verified=True), entry("e1", "emergency", 5),
                    entry("e2", "emergency", 6), entry("c1", "custom", 7)],
                   key=lambda b: b.started_at, reverse=True)
    cfg = BackupConfig(keep_monthly=1, keep_quarterly=1, keep_emergency=1, keep_custom=1)
    assert [b.run_id for b in plan_prune(items, cfg)] == ["e1", "m2", "m1"]
    # q1 is the newest verified backup: with keep_quarterly already used up it would go, but it stays
    items.insert(0, entry("q2", "quarterly", 8))
    assert "q1" not in [b.run_id for b in plan_prune(items, cfg)]


def test_prune_step_deletes_old_backups_after_real_runs(make_env: Any, ctx_for: Any) -> None:
    env = make_env(lambda c: c.update(backup={"keep_monthly": 1, "keep_emergency": 1}))
    made = []
    for i, (runbook, trigger) in enumerate([("monthly", "manual")] * 3 + [("monthly", "emergency")] * 2):
        ctx = ctx_for(env, runbook=runbook, trigger=trigger, run_id=f"r{i}-{uuid.uuid4().hex[:4]}")
        backup_postgres(ctx, BackupParams())
        if i == 0:
            backup_verify(ctx, VerifyParams())
        made.append(ctx)
    ids = [c.run_id for c in made]
    out = backup_prune(made[-1], PruneParams())
    # r1 and r3 go; r0 is older than keep_monthly allows but it is the newest verified backup
    assert sorted(out.data["pruned"]) == sorted([ids[1], ids[3]])
    left = list_backups(made[-1].storage, made[-1].cfg.name)
    assert [b.run_id for b in left] == [ids[4], ids[2], ids[0]]
    assert [b.kind for b in left] == ["emergency", "monthly", "monthly"] and left[-1].verified
    assert not list(Path(made[0].storage.location(f"backups/test/{ids[1]}")).parent.glob(f"{ids[1]}*"))
    listed = run_cli("backups", "list", "--env", str(env), "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [ids[4], ids[2], ids[0]]


GATED = [{"name": "pre-backup", "steps": [{"uses": "backup.postgres"}]},
         {"name": "database-cleanup", "steps": [{"uses": "cleanup.retention", "name": "purge"}]}]


def test_gate_refuses_destructive_step_without_verified_backup(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    rb = write_runbook(tmp_path / "gated.yaml", GATED)
    res = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    assert res.returncode == 1, res.stderr
    report = report_of(res.stdout)
    assert report["status"] == "failed" and report["failure"]["error_type"] == "GateRefused"
    assert "no verified backup" in report["failure"]["error"]
    assert report["backup"]["verified"] is False


def test_gate_override_is_recorded(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    rb = write_runbook(tmp_path / "gated.yaml", GATED)
    res = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json",
                  "--accept-unverified-backup", "--reason", "x")
    assert res.returncode == 0, res.stderr + res.stdout
    report = report_of(res.stdout)
    assert report["status"] == "succeeded"
    over = [d for d in report["deviations"] if d["kind"] == "gate.overridden"]
    assert len(over) == 1 and over[0]["reason"] == "x" and over[0]["step"] == "purge"


def test_s3_run_then_restore_into_a_new_database(make_env: Any, tmp_path: Path, moto_endpoint: str,
                                                 bucket: str, pg_socket: str) -> None:
    env = make_env(lambda c: c.update(storage=s3_storage(moto_endpoint, bucket)))
    rb = write_runbook(tmp_path / "backup.yaml", [
        {"name": "pre-backup", "steps": [{"uses": "backup.postgres"}, {"uses": "backup.verify"}]},
        {"name": "database-cleanup", "steps": [{"uses": "cleanup.retention"}]},
        {"name": "post-verification", "steps": [{"uses": "backup.prune"}]}], kind="monthly")
    res = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr + res.stdout
    report = report_of(res.stdout)
    assert report["backup"]["verified"] and report["backup"]["location"].startswith(f"s3://{bucket}/")
    assert report["backup"]["verification"]["rows"] == 9200
    run_dir = Path(json.loads(res.stdout)["run_dir"])
    assert os.environ[SECRET_ENV] not in "".join(p.read_text() for p in run_dir.glob("*.*") if p.is_file())
    target = f"restored_{uuid.uuid4().hex[:8]}"
    try:
        res = run_cli("restore", "--env", str(env), "--run", report["run_id"], "--into", target, "--json")
        assert res.returncode == 0, res.stderr + res.stdout
        out = json.loads(res.stdout)
        assert out["created"] and out["differences"] == [] and out["rows"] == 9200
        with psycopg.connect(host=pg_socket, dbname=target, user="postgres") as conn:
            assert conn.execute("SELECT count(*) FROM users").fetchone() == (200,)
        again = run_cli("restore", "--env", str(env), "--run", report["run_id"], "--into", target)
        assert again.returncode == 2 and "already exists" in again.stderr
    finally:
        with psycopg.connect(host=pg_socket, dbname="postgres", user="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
