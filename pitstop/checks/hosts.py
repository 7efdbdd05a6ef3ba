"""Host checks: free disk space and inodes, a service is active (systemd unit or a probe command). Whether
maintenance mode is off is maintenance mode's own check (pitstop/maintenance_mode/checks.py).

Commands are argument lists run through the host's connection (local sandbox or SSH, quoted by the
transport); nothing here builds a shell string.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..context import RunContext
from ..model import CheckResult, CheckStatus
from ..registry import Target
from . import check, verdict


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DiskParams(_Params):
    path: str = "/"
    min_free_pct: float = Field(10, ge=0, le=100)


def _df(ctx: RunContext, host: str, path: str, inodes: bool) -> tuple[int, int]:
    """(size, available) of the filesystem holding ``path``: KiB, or inodes with ``inodes``."""
    conn = ctx.host(host)
    argv = ["df", "-P", "-i" if inodes else "-k", conn.path(path)]
    fields = conn.run(argv).stdout.splitlines()[-1].split()
    return int(fields[1]), int(fields[3])


@check("disk_free", params=DiskParams, target=Target.HOSTS)
def disk_free(ctx: RunContext, params: DiskParams, host: str) -> CheckResult:
    """Free space on a host filesystem is above a floor."""
    size_kb, avail_kb = _df(ctx, host, params.path, inodes=False)
    free_pct = round(100 * avail_kb / size_kb, 1) if size_kb else 0.0
    ok = free_pct >= params.min_free_pct
    return CheckResult(name="disk_free", status=verdict(ok),
                       observed=f"{free_pct}% free", expected=f">= {params.min_free_pct}% free",
                       evidence={"host": host, "path": params.path, "avail_kb": avail_kb, "size_kb": size_kb,
                                 "free_pct": free_pct})


class InodeParams(_Params):
    path: str = "/"
    min_free_pct: float = Field(10, ge=0, le=100)


@check("inodes_free", params=InodeParams, target=Target.HOSTS)
def inodes_free(ctx: RunContext, params: InodeParams, host: str) -> CheckResult:
    """Free inodes on a host filesystem are above a floor (filesystems without inode limits pass)."""
    total, free = _df(ctx, host, params.path, inodes=True)
    evidence = {"host": host, "path": params.path, "inodes": total, "inodes_free": free}
    if total == 0:  # btrfs, some overlay mounts: no fixed inode table
        return CheckResult(name="inodes_free", status=CheckStatus.PASS, observed="no inode limit",
                           expected=f">= {params.min_free_pct}% inodes free", evidence=evidence)
    free_pct = round(100 * free / total, 1)
    return CheckResult(name="inodes_free", status=verdict(free_pct >= params.min_free_pct),
                       observed=f"{free_pct}% inodes free", expected=f">= {params.min_free_pct}% inodes free",
                       evidence={**evidence, "free_pct": free_pct})


class ServiceParams(_Params):
    unit: str | None = Field(None, pattern=r"^[A-Za-z0-9@._:-]+$", description="systemd unit name")
    argv: list[str] | None = Field(None, min_length=1, description="probe command; exit 0 means active")
    timeout_s: float = Field(30, gt=0)

    @model_validator(mode="after")
    def _one(self) -> ServiceParams:
        if (self.unit is None) == (self.argv is None):
            raise ValueError("set exactly one of unit (systemd) or argv (a probe command)")
        return self


@check("service_active", params=ServiceParams, target=Target.HOSTS)
def service_active(ctx: RunContext, params: ServiceParams, host: str) -> CheckResult:
    """A service is running: ``systemctl is-active <unit>`` or a probe command exits 0."""
    argv = ["systemctl", "is-active", params.unit] if params.unit else list(params.argv or [])
    res = ctx.host(host).run(argv, check=False, timeout=params.timeout_s)
    state = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    ok = res.exit_code == 0
    observed = (state or f"exit {res.exit_code}") if params.unit else f"exit {res.exit_code}"
    return CheckResult(name="service_active", status=verdict(ok), observed=observed,
                       expected="active" if params.unit else "exit 0",
                       evidence={"host": host, "argv": argv, "exit_code": res.exit_code,
                                 "stdout_tail": res.stdout[-300:], "stderr_tail": res.stderr[-300:]})
