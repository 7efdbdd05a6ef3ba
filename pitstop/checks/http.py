"""HTTP check: status, body contains, a JSON path equals a value, latency ceiling, and the number of
days left on the TLS certificate. Requests go from the machine running pitstop (the site as users see
it); redirects are not followed, so a redirect to a maintenance page is seen as such.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from ..context import RunContext
from ..errors import ConnectorError
from ..model import CheckResult
from . import check, verdict

MAX_BODY = 1024 * 1024


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str]
    latency_ms: float
    cert_not_after: str | None = None
    cert_days_left: float | None = None
    cert_subject: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _cert_info(sock: Any) -> tuple[str | None, float | None, str | None]:
    """notAfter, days left and subject of the peer certificate (parsed from DER: works unverified too)."""
    der = sock.getpeercert(binary_form=True) if sock is not None else None
    if not der:
        return None, None, None
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    not_after = cert.not_valid_after_utc
    days = round((not_after - datetime.now(UTC)).total_seconds() / 86400, 2)
    return not_after.isoformat(), days, cert.subject.rfc4514_string()


def fetch(url: str, *, method: str = "GET", timeout: float = 10, verify: bool = True,
          ca_file: str | None = None, headers: dict[str, str] | None = None) -> Response:
    """One HTTP(S) request; the body is read up to 1 MiB. Raises ConnectorError when unreachable."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectorError(f"not an http(s) URL: {url!r}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                           context=_tls_context(verify, ca_file))
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    t0 = time.monotonic()
    try:
        conn.request(method, path, headers={"User-Agent": "pitstop-check", **(headers or {})})
        # Read the certificate now: an HTTP/1.0 answer closes the connection in getresponse().
        not_after, days, subject = _cert_info(conn.sock) if parts.scheme == "https" else (None, None, None)
        resp = conn.getresponse()
        body = resp.read(MAX_BODY)
        latency = round((time.monotonic() - t0) * 1000, 1)
        return Response(status=resp.status, body=body, headers={k.lower(): v for k, v in resp.getheaders()},
                        latency_ms=latency, cert_not_after=not_after, cert_days_left=days, cert_subject=subject)
    except (OSError, http.client.HTTPException) as exc:
        raise ConnectorError(f"{method} {parts.scheme}://{parts.netloc}{parts.path or '/'}: "
                             f"{type(exc).__name__}: {exc}") from None
    finally:
        conn.close()


_MISSING = object()


def json_path(doc: Any, path: str) -> Any:
    """``a.b.0.c`` into a JSON document; ``_MISSING`` when the path does not exist."""
    cur = doc
    for part in [p for p in path.split(".") if p]:
        if isinstance(cur, list) and part.lstrip("-").isdigit():
            idx = int(part)
            if not -len(cur) <= idx < len(cur):
                return _MISSING
            cur = cur[idx]
        elif isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return _MISSING
    return cur


class HttpParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(pattern=r"^https?://")
    method: Literal["GET", "HEAD", "POST", "OPTIONS"] = "GET"
    expect_status: list[int] = Field(default_factory=lambda: [200])
    body_contains: str | None = None
    json_path: str | None = Field(None, description="dotted path into a JSON body, e.g. status.db or items.0.id")
    json_equals: Any = None
    max_latency_ms: float | None = Field(None, gt=0)
    tls_min_days_left: float | None = Field(None, ge=0)
    timeout_s: float = Field(10, gt=0)
    verify_tls: bool = True
    ca_file: str | None = Field(None, description="CA bundle for private or self-signed certificates")


def _body_problems(params: HttpParams, resp: Response, evidence: dict[str, Any]) -> list[str]:
    problems = []
    text = resp.body.decode(errors="replace")
    if params.body_contains is not None and params.body_contains not in text:
        problems.append(f"body does not contain {params.body_contains!r}")
    if params.json_path is not None:
        try:
            value = json_path(json.loads(text), params.json_path)
        except json.JSONDecodeError:
            value = _MISSING
        shown = None if value is _MISSING else value
        evidence["json_value"] = shown
        if value is _MISSING:
            problems.append(f"JSON path {params.json_path} not found")
        elif params.json_equals is not None and value != params.json_equals:
            problems.append(f"{params.json_path} is {shown!r}, expected {params.json_equals!r}")
    return problems


@check("http", params=HttpParams)
def http_check(ctx: RunContext, params: HttpParams) -> CheckResult:
    """An HTTP(S) endpoint answers as expected (status, body, JSON value, latency, TLS days left)."""
    resp = fetch(params.url, method=params.method, timeout=params.timeout_s, verify=params.verify_tls,
                 ca_file=params.ca_file)
    evidence: dict[str, Any] = {"url": params.url, "status": resp.status, "latency_ms": resp.latency_ms,
                                "content_type": resp.headers.get("content-type"), "body_bytes": len(resp.body)}
    problems: list[str] = []
    if resp.status not in params.expect_status:
        problems.append(f"status {resp.status}" + (" (maintenance page)" if resp.status == 503 else ""))
    problems += _body_problems(params, resp, evidence)
    if params.max_latency_ms is not None and resp.latency_ms > params.max_latency_ms:
        problems.append(f"latency {resp.latency_ms} ms over {params.max_latency_ms:g} ms")
    if resp.cert_not_after:
        evidence.update(tls_not_after=resp.cert_not_after, tls_days_left=resp.cert_days_left,
                        tls_subject=resp.cert_subject)
    if params.tls_min_days_left is not None:
        days = resp.cert_days_left
        if days is None:
            problems.append("no TLS certificate (not https)")
        elif days < params.tls_min_days_left:
            problems.append(f"TLS certificate expires in {days:g} days (< {params.tls_min_days_left:g})")
    expected = [f"status in {params.expect_status}"]
    if params.body_contains is not None:
        expected.append(f"body contains {params.body_contains!r}")
    if params.json_path is not None:
        expected.append(f"{params.json_path} == {params.json_equals!r}" if params.json_equals is not None
                        else f"{params.json_path} present")
    if params.max_latency_ms is not None:
        expected.append(f"latency <= {params.max_latency_ms:g} ms")
    if params.tls_min_days_left is not None:
        expected.append(f"TLS >= {params.tls_min_days_left:g} days left")
    observed = "; ".join(problems) if problems else f"status {resp.status} in {resp.latency_ms} ms" + (
        f", TLS {resp.cert_days_left:g} days left" if resp.cert_days_left is not None else "")
    if problems:
        evidence["differences"] = problems
    return CheckResult(name="http", status=verdict(not problems), observed=observed, expected=", ".join(expected),
                       evidence=evidence)


def resolve(host: str, port: int | None = None) -> list[str]:
    """Addresses of ``host`` from the system resolver (shared with the net checks)."""
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return sorted({str(i[4][0]) for i in infos})
