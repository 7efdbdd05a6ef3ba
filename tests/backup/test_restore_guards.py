"""What ``pitstop restore`` and ``backup.verify`` refuse, and what a failed restore leaves behind.

* ``--replace`` restores beside the existing database and swaps only after the restore passed: a
  failing restore leaves the existing database as it was; a passing one records its reason;
* the environment's own database is recognised on the same cluster however its address is written;
* a manifest altered in storage (any byte: the run's audit log holds its SHA-256) is refused by
  ``backup.verify`` and ``pitstop restore``, and a manifest that names another run's dump is refused
  even without the run folder;
* a dump swapped in S3 for one that runs a program is refused before pg_restore reads it (restore and
  verify), and the program never runs;
* a restoring role that row-level security would filter gets a clear error, not wrong counts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pitstop.backup.state import BackupState
from tests.backup.backup_helpers import (
    admin,
    database_exists,
    drop_database,
    evil_dump,
    padded,
    pg_bin,
    s3_storage,
    write_runbook,
)
from tests.conftest import report_of, run_cli
from tests.reliability.results import record


def backup_run(env: Path, tmp_path: Path, verify: bool = False) -> dict[str, Any]:
    steps = [{"uses": "backup.postgres"}] + ([{"uses": "backup.verify"}] if verify else [])
    rb = write_runbook(tmp_path / f"backup-{uuid.uuid4().hex[:6]}.yaml", [{"name": "pre-backup", "steps": steps}])
    res = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-2000:]
    return report_of(res.stdout)


def manifest_path(report: dict[str, Any]) -> Path:
    dump = Path(report["backup"]["location"])
    return dump.with_name(dump.name.removesuffix(".dump") + ".manifest.json")


@pytest.fixture
def names(pg_socket: str) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for n in made:
        drop_database(pg_socket, n)


@pytest.fixture
def marker() -> Iterator[Path]:
    path = Path("/tmp") / f"pitstop-evil-{uuid.uuid4().hex[:8]}"
    yield path
    path.unlink(missing_ok=True)


def test_a_failed_replace_leaves_the_existing_database_as_it_was(make_env: Any, tmp_path: Path, pg_socket: str,
                                                                 names: list[str]) -> None:
    env = make_env()
    report = backup_run(env, tmp_path)
    existing = f"existing_{uuid.uuid4().hex[:8]}"
    names.append(existing)
    with admin(pg_socket) as conn:
        conn.execute(f'CREATE DATABASE "{existing}"')
    with admin(pg_socket, existing) as conn:
        conn.execute("CREATE TABLE precious (v text); INSERT INTO precious VALUES ('still here')")
    dump = Path(report["backup"]["location"])
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF  # bit rot: the restore fails on the checksum
    dump.write_bytes(bytes(data))
    with admin(pg_socket) as conn:
        before = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    out = run_cli("restore", "--env", str(env), "--run", report["run_id"], "--into", existing, "--replace",
                  "--reason", "refresh staging from last night")
    assert out.returncode == 1, out.stderr + out.stdout
    flat = " ".join(out.stderr.split())
    assert "SHA-256" in flat and f"the existing '{existing}' was left as it was" in flat
    assert "Traceback" not in out.stderr
    with admin(pg_socket, existing) as conn:
        assert conn.execute("SELECT v FROM precious").fetchall() == [("still here",)]
    with admin(pg_socket) as conn:
        assert {r[0] for r in conn.execute("SELECT datname FROM pg_database")} == before  # nothing left behind
    journal = [json.loads(ln) for ln in (tmp_path / "state" / "restores.jsonl").read_text().splitlines()]
    assert journal[-1]["outcome"] == "failed" and journal[-1]["reason"] == "refresh staging from last night"


def test_a_passed_replace_swaps_the_database_and_records_why(make_env: Any, tmp_path: Path, pg_socket: str,
                                                             names: list[str]) -> None:
    env = make_env()
    report = backup_run(env, tmp_path)
    existing = f"existing_{uuid.uuid4().hex[:8]}"
    names.append(existing)
    with admin(pg_socket) as conn:
        conn.execute(f'CREATE DATABASE "{existing}"')
    with admin(pg_socket, existing) as conn:
        conn.execute("CREATE TABLE stale (v text)")
    out = run_cli("restore", "--env", str(env), "--run", report["run_id"], "--into", existing, "--replace",
                  "--reason", "refresh staging from last night", "--json")
    assert out.returncode == 0, out.stderr + out.stdout
    info = json.loads(out.stdout)
    assert info["replaced"] is True and info["reason"] == "refresh staging from last night"
    with admin(pg_socket, existing) as conn:
        assert conn.execute("SELECT to_regclass('stale')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (200,)
        comment = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                               "WHERE datname = current_database()").fetchone()[0]
    assert "refresh staging from last night" in comment and report["run_id"] in comment
    with admin(pg_socket) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'pitstop\\_restore\\_%'"
                            ).fetchone() == (0,)
    journal = [json.loads(ln) for ln in Path(info["journal"]).read_text().splitlines()]
    assert journal[-1]["outcome"] == "restored" and journal[-1]["replaced"] is True
    assert journal[-1]["reason"] == "refresh staging from last night" and journal[-1]["user"]


def test_the_source_database_is_refused_however_its_address_is_written(make_env: Any, tmp_path: Path,
                                                                        pg_socket: str, seeded_db: str,
                                                                        names: list[str]) -> None:
    """Spelled differently from the config (no port, a URI with the socket directory percent-encoded), the
    environment's own database is still recognised, by the cluster's system identifier: with --replace the
    old code dropped it."""
    from urllib.parse import quote

    env = make_env()
    report = backup_run(env, tmp_path)
    for into in (f"host={pg_socket} user=postgres dbname={seeded_db}",
                 f"postgresql://postgres@{quote(pg_socket, safe='')}/{seeded_db}"):
        out = run_cli("restore", "--env", str(env), "--run", report["run_id"], "--into", into, "--replace",
                      "--reason", "oops")
        assert out.returncode == 2, out.stderr + out.stdout
        assert "it is the environment's own database (same cluster" in " ".join(out.stderr.split())
    with admin(pg_socket, seeded_db) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (200,)
    # another name on the same cluster, spelled the same way, is a target like any other
    other = f"copy_{uuid.uuid4().hex[:8]}"
    names.append(other)
    out = run_cli("restore", "--env", str(env), "--run", report["run_id"], "--into",
                  f"host={pg_socket} user=postgres dbname={other}", "--json")
    assert out.returncode == 0, out.stderr + out.stdout


def test_reason_without_replace_is_bad_input(make_env: Any) -> None:
    out = run_cli("restore", "--env", str(make_env()), "--run", "r1", "--into", "x_db", "--reason", "why")
    assert out.returncode == 2 and "--reason goes with --replace" in out.stderr


def test_a_manifest_altered_in_storage_is_refused_by_verify(make_env: Any, ctx_for: Any) -> None:
    from pitstop.backup.steps import BackupParams, VerifyParams, backup_postgres, backup_verify
    from pitstop.errors import BackupError

    ctx = ctx_for(make_env())
    m = backup_postgres(ctx, BackupParams()).data["backup"]
    created = next(e for e in ctx.audit.events if e["kind"] == "backup.created")["data"]
    path = Path(m["location"]).with_name(Path(m["location"]).name.replace(".dump", ".manifest.json"))
    import hashlib

    assert created["manifest_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    doc = json.loads(path.read_text())
    doc["row_counts"]["public.users"] = 0  # storage says the dump holds fewer rows than it does
    path.write_text(json.dumps(doc, indent=2))
    with pytest.raises(BackupError, match="is not the one this run wrote"):
        backup_verify(ctx, VerifyParams())
    assert ctx.state.of(BackupState).backup["verified"] is False
    assert [e["kind"] for e in ctx.audit.events if e["kind"].startswith("backup.verif")] == ["backup.verify_failed"]
    record("altered_manifest_verify", forged_inputs=1, trusted=0)


def test_a_manifest_altered_in_storage_is_refused_by_restore(make_env: Any, tmp_path: Path, pg_socket: str,
                                                             names: list[str]) -> None:
    env = make_env()
    report = backup_run(env, tmp_path, verify=True)
    path = manifest_path(report)
    doc = json.loads(path.read_text())
    assert doc["verified"] is True
    doc["kind"] = "quarterly"  # keeps it longer; size and SHA-256 of the dump untouched
    path.write_text(json.dumps(doc, indent=2))
    target = f"restored_{uuid.uuid4().hex[:8]}"
    names.append(target)
    out = run_cli("restore", "--env", str(env), "--run", report["run_id"], "--into", target)
    record("altered_manifest_restore", forged_inputs=1, trusted=int(out.returncode == 0))
    assert out.returncode == 1, out.stderr + out.stdout
    assert "is not one the run wrote" in " ".join(out.stderr.split()) and "Traceback" not in out.stderr
    assert not database_exists(pg_socket, target)


def test_a_manifest_naming_another_runs_dump_is_refused(make_env: Any, tmp_path: Path, pg_socket: str,
                                                        names: list[str]) -> None:
    """Without the run folder the manifest cannot be checked against an audit log, but it still has to
    describe its own run: one that sends the restore to another run's dump (another day's data) is refused."""
    env = make_env()
    first, second = backup_run(env, tmp_path), backup_run(env, tmp_path)
    path = manifest_path(second)
    other = json.loads(manifest_path(first).read_text())
    doc = json.loads(path.read_text())
    doc.update({k: other[k] for k in ("key", "location", "size", "sha256", "row_counts", "tables")})
    path.write_text(json.dumps(doc, indent=2))
    run_dir = tmp_path / "state" / "runs" / second["run_id"]
    assert (run_dir / "audit.jsonl").is_file()
    shutil.rmtree(run_dir)  # restored elsewhere: no run folder to check the manifest against
    target = f"restored_{uuid.uuid4().hex[:8]}"
    names.append(target)
    out = run_cli("restore", "--env", str(env), "--run", second["run_id"], "--into", target)
    record("manifest_redirect", forged_inputs=1, trusted=int(out.returncode == 0))
    assert out.returncode == 1, out.stderr + out.stdout
    assert "does not describe run" in " ".join(out.stderr.split()) and "Traceback" not in out.stderr
    assert not database_exists(pg_socket, target)


def test_a_dump_swapped_in_s3_is_refused_before_any_of_it_runs(make_env: Any, tmp_path: Path, pg_socket: str,
                                                                moto_endpoint: str, bucket: str, s3_client: Any,
                                                                ctx_for: Any, marker: Path, names: list[str]) -> None:
    from pitstop.backup.steps import BackupParams, VerifyParams, backup_postgres, backup_verify
    from pitstop.errors import BackupError

    env = make_env(lambda c: c.update(storage=s3_storage(moto_endpoint, bucket)))
    hostile = evil_dump(pg_socket, marker, tmp_path / "evil.dump")
    # verification in a run: the dump is swapped between backup.postgres and backup.verify
    ctx = ctx_for(env)
    m = backup_postgres(ctx, BackupParams()).data["backup"]
    s3_client.put_object(Bucket=bucket, Key=m["key"], Body=padded(hostile, m["size"]))
    with pytest.raises(BackupError, match="SHA-256 .* does not match the manifest"):
        backup_verify(ctx, VerifyParams())
    assert not marker.exists(), "the swapped dump's program ran during verification"
    # pitstop restore of a verified run whose dump was swapped afterwards
    report = backup_run(env, tmp_path, verify=True)
    key = report["backup"]["location"].removeprefix(f"s3://{bucket}/")
    size = s3_client.head_object(Bucket=bucket, Key=key)["ContentLength"]
    s3_client.put_object(Bucket=bucket, Key=key, Body=padded(hostile, size))
    target = f"restored_{uuid.uuid4().hex[:8]}"
    names.append(target)
    out = run_cli("restore", "--env", str(env), "--run", report["run_id"], "--into", target)
    record("swapped_dump_s3", forged_inputs=2, trusted=int(out.returncode == 0 or marker.exists()))
    assert out.returncode == 1, out.stderr + out.stdout
    assert "SHA-256" in out.stderr and "Traceback" not in out.stderr
    assert not marker.exists(), "the swapped dump's program ran during the restore"
    assert not database_exists(pg_socket, target)
    # control: the same dump given to pg_restore does run its program, so the checks above are what stopped it
    with admin(pg_socket) as conn:
        conn.execute(f'CREATE DATABASE "{target}"')
    subprocess.run([pg_bin("pg_restore"), "-h", pg_socket, "-U", "postgres", "-d", target, "--no-owner",
                    str(tmp_path / "evil.dump")], capture_output=True, check=False)
    assert marker.exists()


def test_a_role_that_row_security_would_filter_gets_a_clear_error(make_env: Any, tmp_path: Path, pg_socket: str,
                                                                   seeded_db: str, names: list[str]) -> None:
    role = f"restorer_{uuid.uuid4().hex[:6]}"
    with admin(pg_socket, seeded_db) as conn:
        conn.execute("CREATE TABLE tenant_data (id int, tenant text); "
                     "INSERT INTO tenant_data SELECT g, 't' || g % 3 FROM generate_series(1, 30) g; "
                     "ALTER TABLE tenant_data ENABLE ROW LEVEL SECURITY; "
                     "ALTER TABLE tenant_data FORCE ROW LEVEL SECURITY; "
                     "CREATE POLICY mine ON tenant_data USING (tenant = current_user)")
    with admin(pg_socket) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN CREATEDB")
    try:
        env = make_env()
        report = backup_run(env, tmp_path, verify=True)
        assert report["backup"]["verified"] is True
        target = f"restored_{uuid.uuid4().hex[:8]}"
        names.append(target)
        # restored as a non-superuser: it owns the restored tables (--no-owner), and FORCE puts owners under
        # the policy, which would show it none of the 30 rows
        out = run_cli("restore", "--env", str(env), "--run", report["run_id"], "--into",
                      f"host={pg_socket} user={role} dbname={target}")
        assert out.returncode == 1, out.stderr + out.stdout
        flat = " ".join(out.stderr.split())
        assert "row-level security" in flat and "public.tenant_data" in flat and "Traceback" not in flat
        assert not database_exists(pg_socket, target)
    finally:
        for n in names:
            drop_database(pg_socket, n)
        with admin(pg_socket) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")
