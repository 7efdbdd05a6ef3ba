"""Permanent faults and host keys: one attempt each, a fast failure with a clear message, maintenance
off, the report written; unknown and rotated host keys are refused before any session opens."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.conftest import ROOT
from tests.fleet.sshlab import keygen
from tests.reliability.helpers import cli, events
from tests.reliability.results import record


def window_runbook(tmp: Path, extra_in_window: dict[str, Any] | None = None) -> Path:
    """Monthly without the all-host disk checks: app-1 is reached only by the server-tuning steps."""
    rb = yaml.safe_load((ROOT / "runbooks" / "monthly.yaml").read_text())
    for stage in rb["stages"]:
        stage["steps"] = [s for s in stage.get("steps", []) if s["uses"] != "check.disk_free"]
        if stage["name"] == "server-tuning" and extra_in_window:
            stage["steps"].insert(0, extra_in_window)
    path = tmp / "window.yaml"
    path.write_text(yaml.safe_dump(rb, sort_keys=False))
    return path


def accepted(sshd_log: str) -> int:
    return sshd_log.count("Accepted publickey")


def run_failing(env: Path, rb: Path | str, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    t0 = time.monotonic()
    res = cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json", env=extra_env)
    elapsed = time.monotonic() - t0
    assert res.returncode == 1, (res.returncode, res.stdout[-1500:], res.stderr[-3000:])
    info = json.loads(res.stdout)
    report = json.loads(Path(info["report"]).read_text())
    assert report["status"] == "failed"
    run_dir = Path(info["run_dir"])
    assert (run_dir / "report.html").exists() and (run_dir / "report.json").exists()
    return {"report": report, "events": events(run_dir), "elapsed": elapsed, "stderr": res.stderr}


def on_off_balanced(evs: list[dict[str, Any]]) -> int:
    """Every host that got maintenance on got it off again; returns how many hosts were on."""
    on = [e["data"]["host"] for e in evs if e["kind"] == "maintenance.on"]
    off = [e["data"]["host"] for e in evs if e["kind"] == "maintenance.off"]
    assert sorted(set(on)) == sorted(set(off)), (on, off)
    return len(set(on))


def flags_left(env: Path) -> list[str]:
    return [str(p) for p in env.parent.rglob("maintenance.flag")]


@pytest.mark.parametrize("case", ["unknown", "rotated"])
def test_unknown_and_rotated_host_keys_refused(case: str, ssh_env: Any, rel_hosts: Any, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    if case == "unknown":
        known.write_text("")
    else:  # every host presents a key other than the one pinned for it
        other = keygen(tmp_path / "rotated_key")
        pub = " ".join(other.with_suffix(".pub").read_text().split()[:2])
        known.write_text("".join(f"[{h.address}]:{h.port} {pub}\n" for h in rel_hosts))
    env = ssh_env(lambda cfg: cfg["ssh"].update(known_hosts=[str(known)]))
    sshd = rel_hosts[0].sshd
    before = accepted(sshd.log)
    out = run_failing(env, "monthly")
    assert accepted(sshd.log) == before, "a session was opened despite the host key"
    err = out["report"]["failure"]["error"].lower()
    assert "host key" in err, err
    assert not [e for e in out["events"] if e["kind"] == "retry"], "host key errors must not be retried"
    assert flags_left(env) == []
    record(f"hostkeys.{case}")


def test_ssh_auth_failure_one_attempt(ssh_env: Any, rel_hosts: Any, tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "not-authorized")
    env = ssh_env(lambda cfg: cfg["hosts"][rel_hosts[2].name].update(identity_file=str(stranger)))
    log0 = rel_hosts[2].sshd.log
    out = run_failing(env, window_runbook(tmp_path))
    err = out["report"]["failure"]["error"]
    assert "authentication" in err and rel_hosts[2].name in err, err
    assert out["report"]["failure"]["stage"] == "server-tuning"
    assert not [e for e in out["events"] if e["kind"] == "retry"]
    tail = [ln for ln in rel_hosts[2].sshd.log[len(log0):].splitlines()
            if "Connection from" in ln and f" on {rel_hosts[2].address} port" in ln]
    assert len(tail) == 1, tail  # one connection to the app host: an auth failure is never retried
    assert flags_left(env) == [], "maintenance left on after a permanent failure"
    on_off_balanced(out["events"])


def test_database_permission_denied(ssh_env: Any, tmp_path: Path, pg_socket: str, seeded_db: str) -> None:
    role = f"rel_ro_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(host=pg_socket, dbname=seeded_db, user="postgres", autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
    env = ssh_env(lambda cfg: cfg["database"].update(user=role))
    out = run_failing(env, "monthly")
    err = out["report"]["failure"]["error"]
    assert "permission denied" in err, err
    assert not [e for e in out["events"] if e["kind"] == "retry"]
    assert flags_left(env) == []


def test_missing_bucket(ssh_env: Any, moto_endpoint: str, tmp_path: Path) -> None:
    bucket = f"missing-{uuid.uuid4().hex[:8]}"
    def mutate(cfg: dict[str, Any]) -> None:
        cfg["storage"] = {"kind": "s3", "bucket": bucket, "endpoint_url": moto_endpoint, "region": "us-east-1",
                          "access_key_env": "PITSTOP_REL_S3_KEY", "secret_key_env": "PITSTOP_REL_S3_SECRET"}

    env = ssh_env(mutate)
    out = run_failing(env, "monthly", {"PITSTOP_REL_S3_KEY": "rel-test-key",
                                       "PITSTOP_REL_S3_SECRET": "rel-test-secret"})
    err = out["report"]["failure"]["error"]
    assert bucket in err and ("NoSuchBucket" in err or "does not exist" in err), err
    assert not [e for e in out["events"] if e["kind"] == "retry"]
    assert flags_left(env) == []


def test_bad_sql_in_custom_check(ssh_env: Any, tmp_path: Path) -> None:
    env = ssh_env()
    bad = {"uses": "check.sql_assert", "name": "custom check with a typo", "destructive": False,
           "with": {"sql": "SELEC count(*) FROM orders", "expect_scalar": 0}}
    out = run_failing(env, window_runbook(tmp_path, bad))
    failure = out["report"]["failure"]
    assert failure["step"] == "custom check with a typo" and "syntax error" in failure["error"], failure
    assert not [e for e in out["events"] if e["kind"] == "retry"]
    assert flags_left(env) == [], "maintenance left on after a failed check"
    on_off_balanced(out["events"])


def test_permission_denied_inside_the_window(ssh_env: Any, tmp_path: Path) -> None:
    """A command refused by the host (EACCES even for root) while maintenance is on: one attempt,
    the run fails, maintenance is lifted, the report says why."""
    env = ssh_env()
    rb = yaml.safe_load((ROOT / "runbooks" / "monthly.yaml").read_text())
    for stage in rb["stages"]:
        for s in stage.get("steps", []):
            if s.get("name") == "reload application":
                s["with"] = {"argv": ["touch", "/sys/pitstop-denied"]}
    path = tmp_path / "denied.yaml"
    path.write_text(yaml.safe_dump(rb, sort_keys=False))
    out = run_failing(env, path)
    failure = out["report"]["failure"]
    assert failure["step"] == "reload application" and "Permission denied" in failure["error"], failure
    assert not [e for e in out["events"] if e["kind"] == "retry"]
    assert on_off_balanced(out["events"]) >= 1, "maintenance was not on when the step failed"
    assert flags_left(env) == []
