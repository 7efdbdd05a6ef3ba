"""Report objects in S3 (moto in server mode, over HTTP): with Object Lock enabled on the bucket they
are written in COMPLIANCE mode, cannot be deleted, and their ETags/versions are recorded."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.conftest import report_of, run_cli
from tests.reports.replay import rewrite_without

ENV = {"PITSTOP_T_MOTO_KEY": "testing-key", "PITSTOP_T_MOTO_SECRET": "testing-secret"}


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing-key", aws_secret_access_key="testing-secret")


def _s3_env(make_env, endpoint: str, bucket: str) -> Path:
    def mutate(cfg: dict) -> None:
        cfg["storage"] = {"kind": "s3", "bucket": bucket, "endpoint_url": endpoint, "region": "us-east-1",
                          "access_key_env": "PITSTOP_T_MOTO_KEY", "secret_key_env": "PITSTOP_T_MOTO_SECRET"}

    return make_env(mutate)


def test_locked_bucket_gets_compliance_objects_and_a_receipt(make_env, moto, tmp_path):
    s3 = _client(moto)
    s3.create_bucket(Bucket="reports-locked", ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(Bucket="reports-locked", ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 30}}})
    env_path = _s3_env(make_env, moto, "reports-locked")
    proc = run_cli("run", "--env", str(env_path), "--runbook", "monthly", "--engine", "local", "--json", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout)
    run_dir, run_id = Path(info["run_dir"]), info["run_id"]
    receipt = json.loads(run_dir.with_name(f"{run_id}.receipt.json").read_text())
    assert receipt["object_lock"] == {"mode": "COMPLIANCE", "days": 30}
    names = {o["key"].rsplit("/", 1)[1] for o in receipt["objects"]}
    assert names == {"audit.jsonl", "report.json", "report.md", "report.html", "manifest.json"}
    for obj in receipt["objects"]:
        head = s3.head_object(Bucket="reports-locked", Key=obj["key"], VersionId=obj["version_id"])
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ETag"].strip('"') == obj["etag"] and obj["version_id"]
    # The receipt is in the bucket too, and a locked version cannot be deleted.
    stored = s3.get_object(Bucket="reports-locked", Key=f"reports/test/{run_id}.receipt.json")["Body"].read()
    assert json.loads(stored)["objects"] == receipt["objects"]
    html = next(o for o in receipt["objects"] if o["key"].endswith("report.html"))
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket="reports-locked", Key=html["key"], VersionId=html["version_id"])
    assert exc.value.response["Error"]["Code"] == "AccessDenied"
    # Verify from the bucket copy alone.
    shutil.rmtree(run_dir)
    proc = run_cli("report", "verify", run_id, "--env", str(env_path), "--json", env=ENV)
    assert proc.returncode == 0 and json.loads(proc.stdout)["ok"] is True, proc.stdout + proc.stderr


def test_plain_bucket_gets_plain_copies(make_env, moto):
    s3 = _client(moto)
    s3.create_bucket(Bucket="reports-plain")
    env_path = _s3_env(make_env, moto, "reports-plain")
    proc = run_cli("run", "--env", str(env_path), "--runbook", "monthly", "--engine", "local", "--json", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = report_of(proc.stdout)
    run_dir = Path(json.loads(proc.stdout)["run_dir"])
    assert not run_dir.with_name(f"{r['run_id']}.receipt.json").exists()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="reports-plain", Prefix="reports/")["Contents"]]
    assert f"reports/test/{r['run_id']}/report.html" in keys


def _rewritten_run(make_env, moto: str, bucket: str) -> tuple[Path, str, Path]:
    env_path = _s3_env(make_env, moto, bucket)
    proc = run_cli("run", "--env", str(env_path), "--runbook", "monthly", "--engine", "local", "--json", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout)
    run_dir, run_id = Path(info["run_dir"]), info["run_id"]
    ok = run_cli("report", "verify", run_id, "--env", str(env_path), "--json", env=ENV)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert _storage_anchor(json.loads(ok.stdout))["status"] == "matched"
    rewrite_without(run_dir, "cleanup.purged")
    return env_path, run_id, run_dir


def _storage_anchor(out: dict) -> dict:
    return next(a for a in out["anchors"] if a["anchor"] == "storage")


def _anchor_says_tampered(env_path: Path, run_id: str) -> None:
    res = run_cli("report", "verify", run_id, "--env", str(env_path), "--json", env=ENV)
    out = json.loads(res.stdout)
    assert res.returncode == 1 and not out["ok"], out
    anchor = _storage_anchor(out)
    assert anchor["status"] == "MISMATCH" and anchor["where"].startswith("s3://"), out


def test_s3_anchor_catches_a_rewritten_folder(make_env, moto):
    _client(moto).create_bucket(Bucket="anchors-plain")
    env_path, run_id, _ = _rewritten_run(make_env, moto, "anchors-plain")
    _anchor_says_tampered(env_path, run_id)


def test_locked_anchor_survives_an_overwrite_by_whoever_rewrote_the_folder(make_env, moto):
    """With Object Lock (versioning on) a new version of the anchor does not replace the first one."""
    from pitstop.report.anchor import head, key

    s3 = _client(moto)
    s3.create_bucket(Bucket="anchors-locked", ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(Bucket="anchors-locked", ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    env_path, run_id, run_dir = _rewritten_run(make_env, moto, "anchors-locked")
    forged = (json.dumps(head(run_dir), indent=2, sort_keys=True) + "\n").encode()
    s3.put_object(Bucket="anchors-locked", Key=key("test", run_id), Body=forged)  # the latest version now agrees
    _anchor_says_tampered(env_path, run_id)


def test_a_storage_copy_with_names_outside_its_folder_is_refused(make_env, moto, tmp_path):
    s3 = _client(moto)
    s3.create_bucket(Bucket="reports-hostile")
    env_path = _s3_env(make_env, moto, "reports-hostile")
    run_id = "20261204T020000Z-test-monthly-hostil"
    s3.put_object(Bucket="reports-hostile", Key=f"reports/test/{run_id}/report.md", Body=b"# fine\n")
    s3.put_object(Bucket="reports-hostile", Key=f"reports/test/{run_id}/../../../../escaped.md", Body=b"x")
    res = run_cli("report", "show", run_id, "--env", str(env_path), env=ENV, cwd=tmp_path)
    assert res.returncode == 2 and "not a file of a run folder" in " ".join(res.stderr.split()), res.stderr
    assert not list(Path("/tmp").glob("escaped.md")) and not (tmp_path / "escaped.md").exists()
