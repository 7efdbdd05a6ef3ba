"""Transient faults, injected for real: SSH connection resets (TCP proxy in front of sshd), S3 resets
and 503s (proxy in front of moto's server), lock waits (a SHARE lock on a purged table), SMTP
refusals (aiosmtpd answering 451). Each is retried with bounded, jittered backoff; the run completes
and its audit log and report list every retry."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from pitstop.model import Status
from pitstop.runner import execute
from tests.reliability.faults import FaultProxy
from tests.reliability.helpers import events
from tests.reliability.results import full, record

LOCK_TIMEOUTS = 8


class RefusingInbox:
    """Answers 451 to the first delivery attempt of the first ``refuse`` distinct messages."""

    def __init__(self, refuse: int):
        self.refuse, self.refused, self.accepted = refuse, 0, 0
        self.seen: set[bytes] = set()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
        subject = next((ln for ln in (envelope.content or b"").splitlines() if ln.startswith(b"Subject:")), b"")
        if subject not in self.seen and self.refused < self.refuse:
            self.seen.add(subject)
            self.refused += 1
            return "451 4.3.0 Temporary failure, try again"
        self.accepted += 1
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[RefusingInbox, int]]:
    from aiosmtpd.controller import Controller

    from tests.conftest import free_port

    inbox = RefusingInbox(refuse=6 if full() else 3)
    port = free_port()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port, ready_timeout=10)
    ctl.start()
    yield inbox, port
    ctl.stop()


def hold_lock_until_backoffs(pg_socket: str, db: str, run_root: Path, n: int, ready: threading.Event,
                             done: threading.Event) -> None:
    """SHARE-lock `events` (reads go on, the purge's DELETE waits) until the purge backed off n times."""
    with psycopg.connect(host=pg_socket, dbname=db, user="postgres") as conn:
        conn.execute("LOCK TABLE events IN SHARE MODE")
        ready.set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not done.is_set():
            evs = [e for d in run_root.glob("*/") for e in events(d)]
            if sum(e["kind"] == "cleanup.backoff" and e["data"]["table"] == "public.events" for e in evs) >= n:
                break
            time.sleep(0.01)
        conn.rollback()


def test_transient_faults_are_retried_and_the_run_completes(ssh_env: Any, rel_hosts: Any, ssh_lab: Any,
                                                            moto_endpoint: str, smtp: Any, tmp_path: Path,
                                                            pg_socket: str, seeded_db: str) -> None:
    inbox, smtp_port = smtp
    ssh_resets = 3 if full() else 1
    ssh_proxies = {h.name: FaultProxy((h.address, h.port), ["reset"] * ssh_resets) for h in rel_hosts}
    known = tmp_path / "known_hosts"
    known.write_text("".join(f"[127.0.0.1]:{p.port} {rel_hosts[0].sshd.host_pub}\n" for p in ssh_proxies.values()))
    host, port = moto_endpoint.removeprefix("http://").split(":")
    s3_plan = ["reset", "http503"] * (5 if full() else 1)
    s3_proxy = FaultProxy((host, int(port)), s3_plan)
    bucket = f"rel-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", aws_access_key_id="k",
                 aws_secret_access_key="s").create_bucket(Bucket=bucket)

    def mutate(cfg: dict[str, Any]) -> None:
        cfg["ssh"].update(known_hosts=[str(known)], connect_retries=6)
        for name, proxy in ssh_proxies.items():
            cfg["hosts"][name].update(address="127.0.0.1", port=proxy.port)
        cfg["storage"] = {"kind": "s3", "bucket": bucket, "endpoint_url": f"http://127.0.0.1:{s3_proxy.port}",
                          "region": "us-east-1", "access_key_env": "PITSTOP_REL_S3_KEY",
                          "secret_key_env": "PITSTOP_REL_S3_SECRET", "retry_attempts": 12, "retry_max_wait": 0.5}
        cfg["notifications"]["channels"]["mail"] = {"kind": "apprise", "url_env": "PITSTOP_REL_MAIL_URL",
                                                    "audiences": ["ops"]}

    env = ssh_env(mutate)
    ready, done = threading.Event(), threading.Event()
    locker = threading.Thread(target=hold_lock_until_backoffs,
                              args=(pg_socket, seeded_db, env.parent / "state" / "runs", LOCK_TIMEOUTS, ready, done))
    locker.start()
    ready.wait(30)
    import os

    os.environ.update(PITSTOP_REL_S3_KEY="rel-test-key", PITSTOP_REL_S3_SECRET="rel-test-secret",  # noqa: S105 - moto accepts any
                      PITSTOP_REL_MAIL_URL=f"mailto://127.0.0.1:{smtp_port}?from=m@demo.example&to=ops@demo.example"
                                           "&mode=insecure")
    try:
        result = execute(str(env), "monthly")
    finally:
        done.set()
        locker.join(60)
        for p in [*ssh_proxies.values(), s3_proxy]:
            p.close()
    report = result.report()
    assert result.status == Status.SUCCEEDED, report.get("failure")
    evs = events(result.run_dir)
    retries = [e["data"] for e in evs if e["kind"] == "retry"]
    purged = {e["data"]["table"]: e["data"] for e in evs if e["kind"] == "cleanup.purged"}
    backoffs = [e["data"] for e in evs if e["kind"] == "cleanup.backoff"]
    injected = {
        "ssh": sum(p.faults for p in ssh_proxies.values()),
        "s3": s3_proxy.faults,
        "smtp": inbox.refused,
        "lock": purged["public.events"]["lock_retries"],
    }
    seen = {
        "ssh": sum(r["what"] == "ssh.connect" for r in retries),
        "s3": sum(r["what"].startswith("s3.") for r in retries),
        "smtp": sum(r["what"] == "notify" and r["channel"] == "mail" for r in retries),
        "lock": len(backoffs),
    }
    recovered = sum(min(injected[k], seen[k]) for k in injected)
    record("transient", transient_faults=sum(injected.values()), recovered=recovered)
    assert injected["ssh"] == ssh_resets * len(rel_hosts) and injected["s3"] == len(s3_plan)
    assert injected["smtp"] >= 1 and injected["lock"] >= LOCK_TIMEOUTS
    assert seen == {**injected, "lock": seen["lock"]} and seen["lock"] >= LOCK_TIMEOUTS, (injected, seen)
    # bounded backoff: every wait below the configured caps (5 s SSH, 0.5 s S3)
    assert all(r["wait_s"] <= 5.5 for r in retries if r["what"] == "ssh.connect")
    assert all(r["wait_s"] <= 0.5 for r in retries if r["what"].startswith("s3."))
    assert inbox.accepted >= 1
    # The report lists every retry (JSON and the human-readable Markdown/HTML).
    assert [(t["what"], t["attempt"]) for t in report["retries"]] == [(r["what"], r["attempt"]) for r in retries]
    for name in ("report.md", "report.html"):
        text = (result.run_dir / name).read_text()
        assert "Retried faults" in text and text.count("ssh.connect") >= seen["ssh"]
