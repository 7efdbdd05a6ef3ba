"""Network checks from the machine running pitstop: a TCP port accepts connections; a name resolves
(through the system resolver, or a given DNS server when ``resolver`` is set)."""

from __future__ import annotations

import socket
import time

from pydantic import BaseModel, ConfigDict, Field

from ..context import RunContext
from ..model import CheckResult
from . import check, verdict
from .dnsquery import query


class TcpParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    timeout_s: float = Field(5, gt=0)
    expect_open: bool = Field(True, description="false: the port must be closed (e.g. an admin port)")


@check("tcp", params=TcpParams)
def tcp(ctx: RunContext, params: TcpParams) -> CheckResult:
    """A TCP port accepts connections (or, with expect_open: false, refuses them)."""
    t0 = time.monotonic()
    error = None
    try:
        with socket.create_connection((params.host, params.port), timeout=params.timeout_s):
            is_open = True
    except OSError as exc:
        is_open, error = False, f"{type(exc).__name__}: {exc}"
    ms = round((time.monotonic() - t0) * 1000, 1)
    want = "open" if params.expect_open else "closed"
    return CheckResult(name="tcp", status=verdict(is_open == params.expect_open),
                       observed=f"{params.host}:{params.port} " + ("open" if is_open else "closed"),
                       expected=f"{params.host}:{params.port} {want}",
                       evidence={"host": params.host, "port": params.port, "connect_ms": ms, "error": error})


class DnsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    resolver: str | None = Field(None, description="DNS server IP (port 53, or ip:port); default: system resolver")
    record: str = Field("A", pattern="^(A|AAAA)$")
    expect: list[str] = Field(default_factory=list, description="addresses that must all be among the answers")
    timeout_s: float = Field(5, gt=0)


@check("dns", params=DnsParams)
def dns(ctx: RunContext, params: DnsParams) -> CheckResult:
    """A name resolves (optionally to the expected addresses)."""
    if params.resolver:
        host, _, port = params.resolver.rpartition(":") if params.resolver.count(":") == 1 else (
            params.resolver, "", "")
        answers = query(params.name, host or params.resolver, int(port or 53), params.record, params.timeout_s)
        via = params.resolver
    else:
        family = socket.AF_INET6 if params.record == "AAAA" else socket.AF_INET
        answers = sorted({str(i[4][0]) for i in socket.getaddrinfo(params.name, None, family, socket.SOCK_STREAM)})
        via = "system resolver"
    missing = [a for a in params.expect if a not in answers]
    ok = bool(answers) and not missing
    return CheckResult(name="dns", status=verdict(ok), observed=answers or "no answer",
                       expected=params.expect or "at least one address",
                       evidence={"name": params.name, "record": params.record, "resolver": via, "answers": answers,
                                 "differences": {"missing": missing} if missing else None})
