"""Servers going away mid-run: sshd stopped and restarted (its sessions die with it), and the S3
endpoint down for a few seconds in the middle of the backup upload.

* sshd: once maintenance is on (pitstop holds an SSH connection to the host), the host's sshd and
  every session process it forked are killed; it stays down until pitstop has recorded a refused
  reconnect (``retry`` ``ssh.connect``), then starts again with the same host key and port. The run
  completes: later steps reconnect, maintenance is lifted on that host too.
* S3: the fault proxy in front of moto starts an outage when it sees the dump's upload request — it
  cuts every live connection and resets new ones for a few seconds (see ``FaultProxy.outage_on``
  for why moto is not restarted instead). The upload is retried (``retry`` ``s3.upload``) and
  completes; the backup verifies by a restore.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from pitstop.model import Status
from pitstop.runner import execute
from tests.conftest import demo_config
from tests.reliability.faults import FaultProxy
from tests.reliability.helpers import events
from tests.reliability.results import full, record

SSHD = "/usr/sbin/sshd"


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for c in map(int, children):
        out += [c, *_descendants(c)]
    return out


def crash_sshd(sshd: Any) -> None:
    """Kill the sshd we started and the session processes it forked (their connections drop)."""
    doomed = [sshd.proc.pid, *_descendants(sshd.proc.pid)]
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    sshd.proc.wait(10)


def start_sshd_again(sshd: Any) -> None:
    cfg = sshd.dir / "sshd_config"
    sshd.proc = subprocess.Popen([SSHD, "-D", "-f", str(cfg), "-E", str(sshd.dir / "sshd.log")],
                                 stdin=subprocess.DEVNULL)


def wait_for(run_root: Path, predicate: Any, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate([e for d in run_root.glob("*/") for e in events(d)]):
            return True
        time.sleep(0.01)
    return False


@pytest.fixture(scope="module")
def restart_host(ssh_lab: Any) -> Any:  # noqa: F811 - fixture from conftest
    """A host on an sshd of its own (this test kills it)."""
    return ssh_lab.start(1, prefix="restart")[0]


def test_sshd_restart_mid_run(tmp_path: Path, pg_data_dir: Path, seeded_db: str, ssh_lab: Any, rel_hosts: Any,
                              restart_host: Any) -> None:
    hosts = [rel_hosts[0], restart_host, rel_hosts[2]]
    cfg = demo_config(tmp_path / "state", pg_data_dir, seeded_db)
    roots = tmp_path / "roots"
    cfg.update(ssh=ssh_lab.ssh_settings(connect_retries=8), hosts=ssh_lab.host_entries(hosts, roots),
               groups={"web": [h.name for h in hosts[:2]], "app": [hosts[2].name]})
    cfg["maintenance"]["deadman"] = {"enabled": False}
    for h in hosts:
        for d in ("var/www", "var/log/app"):
            (roots / h.name / d).mkdir(parents=True, exist_ok=True)
    env = tmp_path / "env.yaml"
    env.write_text(yaml.safe_dump(cfg, sort_keys=False))
    runs, name = tmp_path / "state" / "runs", restart_host.name
    seen: dict[str, Any] = {}

    def chaos() -> None:
        on = wait_for(runs, lambda evs: any(e["kind"] == "stage.finished" and e["data"].get("stage") ==
                                             "maintenance-on" for e in evs))
        crash_sshd(restart_host.sshd)
        seen["crashed"] = on
        seen["refused"] = wait_for(runs, lambda evs: any(e["kind"] == "retry" and e["data"].get("what") ==
                                                         "ssh.connect" and e["data"].get("host") == name
                                                         for e in evs), timeout=60)
        start_sshd_again(restart_host.sshd)

    t = threading.Thread(target=chaos, daemon=True)
    t.start()
    result = execute(str(env), "monthly")
    t.join(60)
    evs = events(result.run_dir)
    retries = [e["data"] for e in evs if e["kind"] == "retry" and e["data"].get("host") == name]
    ok = result.status == Status.SUCCEEDED and bool(seen.get("crashed")) and bool(retries)
    record("restart.sshd", transient_faults=1, recovered=int(ok))
    assert seen.get("crashed") and seen.get("refused"), seen
    assert result.status == Status.SUCCEEDED, result.report().get("failure")
    assert retries and all(r["what"] == "ssh.connect" and r["wait_s"] <= 5.5 for r in retries), retries
    # the host really served steps after its restart: maintenance lifted there, after the reconnect
    first_retry = next(i for i, e in enumerate(evs) if e["kind"] == "retry" and e["data"].get("host") == name)
    lifted = [i for i, e in enumerate(evs) if e["kind"] == "maintenance.off" and e["data"].get("host") == name]
    assert lifted and lifted[0] > first_retry, "maintenance was not lifted on the restarted host after reconnecting"
    assert not (roots / name / "var/www/maintenance.flag").exists()


def test_s3_outage_mid_upload(make_env: Any, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    host, port = moto_endpoint.removeprefix("http://").split(":")
    proxy = FaultProxy((host, int(port)))
    outage_s = 2.0
    triggers = [b".dump HTTP/1.1"] + ([b".manifest.json HTTP/1.1"] if full() else [])
    for trig in triggers:
        proxy.outage_on(trig, outage_s)
    bucket = f"rel-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", aws_access_key_id="k",
                 aws_secret_access_key="s").create_bucket(Bucket=bucket)  # noqa: S106 - moto accepts any
    monkeypatch.setenv("PITSTOP_REL_S3_KEY", "rel-test-key")
    monkeypatch.setenv("PITSTOP_REL_S3_SECRET", "rel-test-secret")

    def mutate(cfg: dict[str, Any]) -> None:
        cfg["storage"] = {"kind": "s3", "bucket": bucket, "endpoint_url": f"http://127.0.0.1:{proxy.port}",
                          "region": "us-east-1", "access_key_env": "PITSTOP_REL_S3_KEY",
                          "secret_key_env": "PITSTOP_REL_S3_SECRET", "retry_attempts": 12, "retry_max_wait": 1.0}

    env = make_env(mutate)
    try:
        result = execute(str(env), "monthly")
    finally:
        proxy.close()
    evs = events(result.run_dir)
    retries = [e["data"] for e in evs if e["kind"] == "retry" and e["data"]["what"].startswith("s3.")]
    ok = result.status == Status.SUCCEEDED and len(retries) >= proxy.outages
    record("restart.s3", transient_faults=proxy.outages, recovered=proxy.outages if ok else 0)
    assert proxy.outages == len(triggers) and proxy.refused >= 1, (proxy.outages, proxy.refused)
    assert result.status == Status.SUCCEEDED, result.report().get("failure")
    assert any(r["what"] == "s3.upload" for r in retries), retries
    assert all(r["wait_s"] <= 1.0 for r in retries)
    created = [e["data"] for e in evs if e["kind"] == "backup.created"]
    assert len(created) == 1 and created[0]["transient_retries"] >= 1
    assert any(e["kind"] == "step.finished" and e["data"]["uses"] == "backup.verify"
               and e["data"]["status"] == "succeeded" for e in evs)
