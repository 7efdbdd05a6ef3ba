"""Maintenance mode's checks, over the one probe of the configured strategy (``status``):

- ``check.maintenance_off``: off on each target host (the flag gone; the status command or call says off) and,
  with ``url``, the site answers 200 (not the 503 maintenance page);
- ``check.maintenance_state``: on or off as expected, on every host.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..checks import check, verdict
from ..checks.http import fetch
from ..context import RunContext
from ..model import CheckResult, CheckStatus
from ..registry import Target
from . import strategy_for


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _maintenance_group(cfg: Any) -> str:
    return str(cfg.maintenance.targets)


class MaintenanceOffParams(_Params):
    url: str | None = Field(None, description="site URL that must answer 200 once maintenance is off; "
                                              "{host} and {address} are replaced per host")
    expect_status: int = 200
    timeout_s: float = Field(10, gt=0)
    verify_tls: bool = True
    ca_file: str | None = None


def _url_for(ctx: RunContext, template: str, host: str) -> str:
    address = ctx.cfg.hosts[host].address if host in ctx.cfg.hosts else None
    return template.replace("{host}", host).replace("{address}", address or host)


@check("maintenance_off", params=MaintenanceOffParams, target=Target.HOSTS,
       default_group=_maintenance_group)
def maintenance_off(ctx: RunContext, params: MaintenanceOffParams, host: str) -> CheckResult:
    """Maintenance is off: the configured strategy says so for the host (the flag is gone; the status command
    or call says off) and (if a URL is set) the site answers 200."""
    evidence: dict[str, Any] = {"host": host}
    problems: list[str] = []
    st = strategy_for(ctx.cfg.maintenance).status(ctx, host)  # the one probe, shared with maintenance_state
    evidence.update(strategy=st.strategy, detail=st.detail)
    if ctx.cfg.maintenance.strategy == "flag_file":
        evidence.update(flag=ctx.cfg.maintenance.flag_path, flag_present=st.on)
        if st.on:
            problems.append("flag present")
    elif st.on:
        problems.append(f"maintenance mode on ({st.detail})")
    if params.url:
        url = _url_for(ctx, params.url, host)
        resp = fetch(url, timeout=params.timeout_s, verify=params.verify_tls, ca_file=params.ca_file)
        evidence.update(url=url, http_status=resp.status, latency_ms=resp.latency_ms,
                        retry_after=resp.headers.get("retry-after"))
        if resp.status != params.expect_status:
            problems.append(f"site answered {resp.status}" + (" (maintenance page)" if resp.status == 503 else ""))
    off = "flag absent" if ctx.cfg.maintenance.strategy == "flag_file" else "maintenance mode off"
    observed = "; ".join(problems) if problems else \
        (off if off == "flag absent" else f"{off} ({st.detail})") + (", site answered 200" if params.url else "")
    expected = off + (f", site answers {params.expect_status}" if params.url else "")
    if problems:
        evidence["differences"] = problems
    return CheckResult(name="maintenance_off", status=verdict(not problems), observed=observed, expected=expected,
                       evidence=evidence)


class StateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expect: bool = Field(False, description="true: maintenance should be on; false: off")


@check("maintenance_state", params=StateParams, target=Target.HOSTS, default_group="all")
def maintenance_state(ctx: RunContext, params: StateParams, host: str) -> CheckResult:
    """Maintenance mode is on/off on the host, as the configured strategy reports it."""
    st = strategy_for(ctx.cfg.maintenance).status(ctx, host)
    want = "on" if params.expect else "off"
    ok = st.on == params.expect
    return CheckResult(name="maintenance_state", status=CheckStatus.PASS if ok else CheckStatus.FAIL,
                       observed="on" if st.on else "off", expected=want, evidence=st.model_dump())
