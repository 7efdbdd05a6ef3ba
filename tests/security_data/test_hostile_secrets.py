"""Hostile secrets never reach an output, in any form (issue #20 point 4).

Redaction used to run on JSON-escaped text, so ``Cn"ry\\Pw-ü-7Q9z`` appeared raw in audit.jsonl, report.json
and their storage copies. Here hypothesis draws hostile secrets (quotes, backslashes, newlines, '%', '+',
spaces, non-ASCII) for every secret slot of a config, each used by the real service it unlocks: the
database password, the S3 access and secret keys (moto), an SMTP URL's password (aiosmtpd with AUTH), a
webhook URL's token and a second SMTP URL whose server is down. A step prints each secret in every
encoding (JSON, URL, shell, libpq, HTML, repr, base64 at every alignment) and fails like a connection
would, with a DSN in its error and its stderr cut inside the secret. Then audit.jsonl, report.json/md/html,
every file of the state directory, every S3 object (dumps, storage copies of the run folder, anchors),
the console, every email received and every webhook body are scanned for every form.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pitstop.config import load_config
from pitstop.demo import setup_hosts
from tests.conftest import demo_config, free_port
from tests.notify.conftest import Inbox, _self_signed
from tests.reliability.helpers import cli
from tests.reliability.results import full, record

from .secret_forms import FAIL_WITH_DSN, GROUPS, PRINT_FORMS, forms, hostile

ACCESS_KEY_CHARS = "\"\\%+=!-_.*~'"  # what an HTTP Authorization header can carry (no '/', ',', space, newline)


@pytest.fixture(scope="module")
def smtp_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """aiosmtpd with STARTTLS and AUTH whose password the test sets per example."""
    import os
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = _self_signed(tmp_path_factory.mktemp("tls"))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    lab: dict[str, Any] = {"password": None, "inbox": Inbox(), "port": free_port(), "cert": str(cert)}

    def auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        return AuthResult(success=isinstance(data, LoginPassword) and lab["password"] is not None
                          and data.password == lab["password"].encode())

    ctl = Controller(lab["inbox"], hostname="127.0.0.1", port=lab["port"], tls_context=ctx, require_starttls=True,
                     authenticator=auth, auth_required=True, ready_timeout=10)
    ctl.start()
    old = os.environ.get("SSL_CERT_FILE")
    try:
        yield lab
    finally:
        ctl.stop()
        if old is not None:
            os.environ["SSL_CERT_FILE"] = old


def _email_texts(inbox: Inbox) -> list[bytes]:
    out = []
    for _, msg in inbox.messages:
        out.append(msg.as_bytes())
        for part in msg.walk():
            if not part.is_multipart():
                payload = part.get_payload(decode=True) or b""
                out.append(payload)
    return out


SECRETS = st.fixed_dictionaries({
    "db": hostile().filter(lambda s: len(set(s[-9:])) >= 6),
    "s3_access": hostile(ascii_only=True, alphabet=ACCESS_KEY_CHARS), "s3_secret": hostile(),
    "smtp": hostile(ascii_only=True), "hook": hostile()})


@settings(max_examples=6 if full() else 2, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(secrets=SECRETS)
@example(secrets={"db": "it's\\a-sëcret'42",  # a quote and a backslash, no double quote: libpq quoting
                  "s3_access": "AK'IA\\+%=!Q7-x", "s3_secret": "ab\ncd\nef-gh ij%2B\U0001F600",
                  "smtp": "p'w\\x\n+%20 y#",
                  "hook": "/slash/es%/ü\t\\"})
@example(secrets={"db": 'Cn"ry\\Pw-ü-7Q9z', "s3_access": 'AK"IA\\+%=!Q7-x', "s3_secret": "line1\nline2'\"$(id)`x`ü",
                  "smtp": "pa ss+wo%rd/?&=#\n'x\"y", "hook": "tok en/ü?&=%2F+\\\"end"})
def test_hostile_secrets_in_every_slot_never_reach_an_output(secrets: dict[str, str], pg_data_dir: Path,
                                                             seeded_db: str, moto_endpoint: str,
                                                             smtp_lab: dict[str, Any], http_receiver: Any) -> None:
    hook_addr, receiver = http_receiver
    base = Path(tempfile.mkdtemp(prefix="pitstop-hostile-"))
    try:
        _one_run(base, secrets, pg_data_dir, seeded_db, moto_endpoint, smtp_lab, hook_addr, receiver)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _one_run(base: Path, secrets: dict[str, str], pg_data_dir: Path, seeded_db: str, moto_endpoint: str,
             smtp: dict[str, Any], hook_addr: str, receiver: Any) -> None:
    smtp["password"] = secrets["smtp"]
    smtp["inbox"].messages.clear()
    receiver.requests.clear()
    bucket = f"hostile-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id=secrets["s3_access"], aws_secret_access_key=secrets["s3_secret"])
    s3.create_bucket(Bucket=bucket)
    state = base / "state"
    cfg = demo_config(state, pg_data_dir, seeded_db)
    cfg["database"]["password_env"] = "PITSTOP_HS_DB"
    cfg["storage"] = {"kind": "s3", "bucket": bucket, "endpoint_url": moto_endpoint, "region": "us-east-1",
                      "access_key_env": "PITSTOP_HS_S3_ACCESS", "secret_key_env": "PITSTOP_HS_S3_SECRET"}
    cfg["notifications"]["channels"].update({
        "ops-mail": {"kind": "apprise", "url_env": "PITSTOP_HS_MAIL", "audiences": ["ops"]},
        "ops-mail-down": {"kind": "apprise", "url_env": "PITSTOP_HS_MAIL_DOWN", "audiences": ["ops"]},
        "ops-hook": {"kind": "apprise", "url_env": "PITSTOP_HS_HOOK", "audiences": ["ops"]}})
    cfg["notifications"]["attempts"] = 1
    env_path = base / "env.yaml"
    env_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    setup_hosts(load_config(str(env_path)))
    rb = base / "leak.yaml"
    variables = ["PITSTOP_HS_DB", "PITSTOP_HS_S3_ACCESS", "PITSTOP_HS_S3_SECRET", "PITSTOP_HS_SMTP",
                 "PITSTOP_HS_HOOK_TOKEN"]
    printing = [{"uses": "host.command", "targets": "app", "destructive": False, "name": f"print {var} {g}",
                 "with": {"argv": ["python3", "-c", PRINT_FORMS, var, str(g)]}}
                for var in variables for g in range(GROUPS)]
    failing = {"uses": "host.command", "targets": "app", "destructive": False, "name": "connect",
               "with": {"argv": ["python3", "-c", FAIL_WITH_DSN, "PITSTOP_HS_DB"]}}
    rb.write_text(yaml.safe_dump({"name": "leak", "kind": "custom", "stages": [
        {"name": "preflight", "steps": [{"uses": "check.postgres_connect"}]},
        {"name": "pre-backup", "steps": [{"uses": "backup.postgres"}]},
        {"name": "server-tuning", "steps": [*printing, failing]}]}))
    mail = "mailtos://pitstop:{pw}@127.0.0.1:{port}?mode=starttls&from=ops@demo.example&to=ops@demo.example"
    env = {"PITSTOP_HS_DB": secrets["db"], "PITSTOP_HS_S3_ACCESS": secrets["s3_access"],
           "PITSTOP_HS_S3_SECRET": secrets["s3_secret"], "SSL_CERT_FILE": smtp["cert"],
           "PITSTOP_HS_MAIL": mail.format(pw=quote(secrets["smtp"], safe=""), port=smtp["port"]),
           "PITSTOP_HS_MAIL_DOWN": mail.format(pw=quote(secrets["smtp"], safe=""), port=free_port()),
           "PITSTOP_HS_HOOK": f"json://{hook_addr}/hook/{quote(secrets['hook'], safe='')}",
           # the step prints the bare SMTP password and webhook token too (their URLs are what the config names)
           "PITSTOP_HS_SMTP": secrets["smtp"], "PITSTOP_HS_HOOK_TOKEN": secrets["hook"]}
    res = cli("run", "--env", str(env_path), "--runbook", str(rb), "--engine", "local", env=env)
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]  # the step fails on purpose
    run_dir = next((state / "runs").iterdir())
    report = json.loads((run_dir / "report.json").read_text())
    printed = json.dumps(report).count("form: ")
    assert printed >= 4 * GROUPS * len(variables), f"only {printed} printed forms reached the report"

    # every secret was really used by the service it unlocks
    assert len(smtp["inbox"].messages) >= 2, "the SMTP password did not open the mail server"
    assert any("/hook/" in r["path"] for r in receiver.requests), "the webhook was never called"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any("audit.jsonl" in k for k in keys) and any(k.endswith(".dump") or "dump" in k for k in keys), keys

    outputs: dict[str, bytes] = {"console": (res.stdout + res.stderr).encode()}
    outputs.update({str(p): p.read_bytes() for p in state.rglob("*") if p.is_file()})
    outputs.update({f"s3://{bucket}/{k}": s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys})
    outputs.update({f"email {i}": b for i, b in enumerate(_email_texts(smtp["inbox"]))})
    outputs.update({f"webhook {i}": json.dumps(r["json"], ensure_ascii=False).encode()
                    for i, r in enumerate(receiver.requests)})
    assert any(name.endswith("report.html") for name in outputs) and any(name.endswith("report.md") for name in outputs)
    needles = {(slot, name): form for slot, secret in secrets.items() for name, form in forms(secret).items()}
    needles["db", "cut-at-500"] = secrets["db"][-9:]  # what the stderr tail kept of it
    hits = []
    for where, data in outputs.items():
        text = data.decode("utf-8", errors="replace")
        hits += [f"{where}: {slot}/{name}" for (slot, name), form in needles.items()
                 if form.encode() in data or form in text]
    record("hostile_secrets", secret_forms=len(needles), secret_leaks=len(hits))
    assert hits == [], hits[:20]
