"""Real peers for the notification tests: an SMTP server with STARTTLS and AUTH (aiosmtpd) and an
HTTP receiver (http.server in a thread) standing in for Slack/Teams/webhook endpoints."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitstop.config import EnvironmentConfig, load_config
from tests.conftest import free_port

SMTP_USER = "pitstop"
SMTP_PASSWORD = "s3cr3t-Pa55w0rd-never-logged"




def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "smtp.crt", tmp / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
        msg = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), msg))  # type: ignore[arg-type]
        return "250 OK"


@pytest.fixture
def smtp_server(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """aiosmtpd on loopback: STARTTLS required, AUTH required; the client verifies the certificate
    (SSL_CERT_FILE points at the server's self-signed certificate)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = _self_signed(tmp_path_factory.mktemp("tls"))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))

    def auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login == SMTP_USER.encode() and \
            data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=ok)

    inbox = Inbox()
    port = free_port()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True,
                     authenticator=auth, auth_required=True, ready_timeout=10)
    ctl.start()
    try:
        url = (f"mailtos://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{port}?mode=starttls"
               f"&from=maintenance@demo.example&to=customers@demo.example")
        yield {"url": url, "inbox": inbox, "port": port}
    finally:
        ctl.stop()


class Receiver:
    """Collects JSON/form POSTs; ``fail_next`` makes the next N requests answer 500."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_next = 0
        self.lock = threading.Lock()

    def bodies(self) -> list[dict[str, Any]]:
        return [r["json"] for r in self.requests if r["status"] == 200]


@pytest.fixture
def http_receiver() -> Iterator[tuple[str, Receiver]]:
    recv = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with recv.lock:
                status = 500 if recv.fail_next > 0 else 200
                recv.fail_next = max(0, recv.fail_next - 1)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"raw": raw.decode(errors="replace")}
                recv.requests.append({"path": self.path, "headers": dict(self.headers), "json": body,
                                      "status": status})
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"127.0.0.1:{srv.server_address[1]}", recv
    finally:
        srv.shutdown()
        srv.server_close()


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def notices_env(tmp_path: Path) -> Callable[..., EnvironmentConfig]:
    """A config without a database dependency for notice tests: demo schedules, given channels."""

    def make(channels: dict[str, Any], mutate: Callable[[dict[str, Any]], None] | None = None) -> EnvironmentConfig:
        doc = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
        doc["name"] = "shop"
        doc["state_dir"] = str(tmp_path / "state")
        doc["notifications"]["channels"] = channels
        if mutate:
            mutate(doc)
        path = tmp_path / "env.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return load_config(str(path))

    return make


def all_written_bytes(root: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def due_now(doc: dict[str, Any], lead: dt.timedelta = dt.timedelta(hours=47)) -> str:
    """Make the config's only schedule a single window starting ``lead`` from the real now (UTC), so its
    48 h notice is due at the real time: the CLI sends only at the real time (``--now`` is a rehearsal).
    Returns the window id."""
    start = (dt.datetime.now(dt.UTC) + lead).replace(second=0, microsecond=0)
    doc["timezone"] = "UTC"
    doc["schedules"] = {"monthly": {"rrule": "FREQ=DAILY;COUNT=1", "since": start.date().isoformat(),
                                    "at": start.strftime("%H:%M"), "duration": "2h", "runbook": "monthly"}}
    for aud in doc["notifications"].get("audiences", {}).values():
        aud.pop("timezone", None)
    return f"monthly@{start.strftime('%Y%m%dT%H%M%SZ')}"
