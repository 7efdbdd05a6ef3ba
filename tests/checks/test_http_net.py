"""HTTP, TCP and DNS checks against real servers on loopback."""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Iterator

import pytest

from pitstop.model import CheckStatus
from tests.conftest import free_port

from .conftest import run


def test_http_status_body_and_json_path(ctx, http_url):
    r = run(ctx, "http", {"url": f"{http_url}/", "body_contains": "Welcome"})
    assert r.status == CheckStatus.PASS, r
    assert r.evidence["status"] == 200
    r = run(ctx, "http", {"url": f"{http_url}/health", "json_path": "status.replicas.0.ok", "json_equals": True})
    assert r.status == CheckStatus.PASS and r.evidence["json_value"] is True
    r = run(ctx, "http", {"url": f"{http_url}/health", "json_path": "status.db", "json_equals": "degraded"})
    assert r.status == CheckStatus.FAIL
    assert "status.db is 'ok', expected 'degraded'" in r.evidence["differences"]
    r = run(ctx, "http", {"url": f"{http_url}/", "body_contains": "Checkout"})
    assert r.status == CheckStatus.FAIL and "body does not contain" in r.observed


def test_http_maintenance_page_is_a_failure(ctx, http_url):
    r = run(ctx, "http", {"url": f"{http_url}/maint"})
    assert r.status == CheckStatus.FAIL
    assert r.evidence["status"] == 503
    assert "maintenance page" in r.observed


def test_http_latency_ceiling(ctx, http_url):
    r = run(ctx, "http", {"url": f"{http_url}/slow", "max_latency_ms": 50})
    assert r.status == CheckStatus.FAIL
    assert r.evidence["latency_ms"] >= 300
    assert "latency" in r.observed


def test_http_tls_days_left(ctx, tls_server):
    url, ca = tls_server
    ok = run(ctx, "http", {"url": f"{url}/", "ca_file": str(ca), "tls_min_days_left": 5})
    assert ok.status == CheckStatus.PASS, ok
    assert 9 < ok.evidence["tls_days_left"] <= 10
    soon = run(ctx, "http", {"url": f"{url}/", "ca_file": str(ca), "tls_min_days_left": 30})
    assert soon.status == CheckStatus.FAIL
    assert "expires in" in soon.observed
    # Without the CA the certificate is rejected: a failed check with the TLS error as evidence.
    untrusted = run(ctx, "http", {"url": f"{url}/"})
    assert untrusted.status == CheckStatus.FAIL
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.evidence["error"]
    # verify_tls: false still reads the expiry from the presented certificate.
    unverified = run(ctx, "http", {"url": f"{url}/", "verify_tls": False, "tls_min_days_left": 5})
    assert unverified.status == CheckStatus.PASS
    assert 9 < unverified.evidence["tls_days_left"] <= 10




def test_http_unreachable_is_a_failed_check_recorded_in_audit(ctx):
    port = free_port()
    r = run(ctx, "http", {"url": f"http://127.0.0.1:{port}/", "timeout_s": 2})
    assert r.status == CheckStatus.FAIL
    assert "ConnectionRefusedError" in r.evidence["error"]
    ev = [e for e in ctx.audit.events if e["kind"] == "check"][-1]
    assert ev["data"]["name"] == "http" and ev["data"]["status"] == "fail"


def test_tcp_open_and_closed(ctx, http_url):
    port = int(http_url.rsplit(":", 1)[1])
    assert run(ctx, "tcp", {"host": "127.0.0.1", "port": port}).status == CheckStatus.PASS
    closed = free_port()
    r = run(ctx, "tcp", {"host": "127.0.0.1", "port": closed, "timeout_s": 2})
    assert r.status == CheckStatus.FAIL and r.evidence["error"]
    assert run(ctx, "tcp", {"host": "127.0.0.1", "port": closed, "expect_open": False}).status == CheckStatus.PASS


class _Dns(socketserver.BaseRequestHandler):
    """A tiny authoritative DNS server: shop.test → 10.1.2.3, everything else NXDOMAIN."""

    def handle(self) -> None:
        data, sock = self.request
        qid, _flags = struct.unpack("!HH", data[:4])
        pos, labels = 12, []
        while data[pos]:
            labels.append(data[pos + 1: pos + 1 + data[pos]].decode())
            pos += 1 + data[pos]
        question = data[12: pos + 5]
        name = ".".join(labels)
        if name == "shop.test":
            answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("10.1.2.3")
            msg = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + answer
        else:
            msg = struct.pack("!HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question
        sock.sendto(msg, self.client_address)


@pytest.fixture(scope="module")
def dns_server() -> Iterator[str]:
    server = socketserver.ThreadingUDPServer(("127.0.0.1", 0), _Dns)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_dns_system_resolver_and_configured_resolver(ctx, dns_server):
    r = run(ctx, "dns", {"name": "localhost"})
    assert r.status == CheckStatus.PASS and "127.0.0.1" in r.observed
    r = run(ctx, "dns", {"name": "shop.test", "resolver": dns_server, "expect": ["10.1.2.3"]})
    assert r.status == CheckStatus.PASS, r
    assert r.evidence["answers"] == ["10.1.2.3"]
    wrong = run(ctx, "dns", {"name": "shop.test", "resolver": dns_server, "expect": ["10.9.9.9"]})
    assert wrong.status == CheckStatus.FAIL and wrong.evidence["differences"] == {"missing": ["10.9.9.9"]}
    missing = run(ctx, "dns", {"name": "nope.test", "resolver": dns_server})
    assert missing.status == CheckStatus.FAIL and missing.observed == "no answer"
