"""Fixtures for the check tests: a RunContext on a real (embedded) PostgreSQL and local hosts, and real
HTTP(S) servers on loopback (plain, maintenance 503, slow, and TLS with a self-signed certificate)."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.path == "/maint":
            self._send(503, b"<h1>Down for maintenance</h1>", "text/html", {"Retry-After": "300"})
        elif self.path == "/slow":
            time.sleep(0.3)
            self._send(200, b"slow but fine", "text/plain")
        elif self.path == "/health":
            body = json.dumps({"status": {"db": "ok", "replicas": [{"name": "r1", "ok": True}]}}).encode()
            self._send(200, body, "application/json")
        else:
            self._send(200, b"<html><body>Welcome to the shop</body></html>", "text/html")

    def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


def _serve(server: http.server.ThreadingHTTPServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    return t


@pytest.fixture(scope="session")
def http_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    _serve(server)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def self_signed(tmp: Path, days: int) -> tuple[Path, Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="session")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An HTTPS server whose self-signed certificate expires in 10 days; yields (url, ca_file)."""
    cert, key = self_signed(tmp_path_factory.mktemp("tls"), days=10)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    _serve(server)
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


@pytest.fixture
def ctx(make_env: Callable[..., Path]) -> Iterator[Any]:
    """A real RunContext: the demo config on this test's database, local hosts, an audit log."""
    from pitstop.config import load_config
    from pitstop.context import RunContext, RunOptions
    from pitstop.registry import load_plugins
    from pitstop.runbook import load_runbook

    load_plugins()
    cfg = load_config(str(make_env()))
    c = RunContext.create(cfg, load_runbook("monthly", cfg), RunOptions())
    yield c
    c.close()


def run(ctx: Any, name: str, params: dict[str, Any] | None = None, host: str | None = None) -> Any:
    """Run check ``name`` through the same path as a runbook step (audit event included)."""
    from pitstop.checks import CHECKS, run_check
    from pitstop.registry import get_step

    model: type[BaseModel] = get_step(f"check.{name}").params
    args = (host,) if host else ()
    return run_check(name, CHECKS[name], ctx, model.model_validate(params or {}), *args)
