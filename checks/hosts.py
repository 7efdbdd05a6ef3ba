"""Host checks: maintenance flag absent, disk space."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from pitstop.checks import check
from pitstop.context import RunContext
from pitstop.model import CheckResult, CheckStatus
from pitstop.registry import NoParams, Target


@check("maintenance_off", target=Target.HOSTS)
def maintenance_off(ctx: RunContext, params: NoParams, host: str) -> CheckResult:
    """The maintenance flag is gone from the host."""
    path = ctx.cfg.maintenance.flag_path
    present = ctx.host(host).exists(path)
    return CheckResult(name="maintenance_off", status=CheckStatus.FAIL if present else CheckStatus.PASS,
                       observed="flag present" if present else "flag absent", expected="flag absent",
                       evidence={"host": host, "flag": path})


class DiskParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = "/"
    min_free_pct: float = Field(10, ge=0, le=100)


@check("disk_free", params=DiskParams, target=Target.HOSTS)
def disk_free(ctx: RunContext, params: DiskParams, host: str) -> CheckResult:
    """Free space on a host filesystem is above a floor."""
    conn = ctx.host(host)
    out = conn.run(["df", "-P", "-k", conn.path(params.path)]).stdout.splitlines()[-1].split()
    size_kb, avail_kb = int(out[1]), int(out[3])
    free_pct = round(100 * avail_kb / size_kb, 1) if size_kb else 0.0
    ok = free_pct >= params.min_free_pct
    return CheckResult(name="disk_free", status=CheckStatus.PASS if ok else CheckStatus.FAIL,
                       observed=f"{free_pct}% free", expected=f">= {params.min_free_pct}% free",
                       evidence={"host": host, "path": params.path, "avail_kb": avail_kb, "size_kb": size_kb})
