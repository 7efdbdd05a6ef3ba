"""``packages.update``: package updates with apt, dnf or yum.

Plan lists what would change (``apt-get -s`` / ``dnf check-update``, read-only, from the package
lists as they are); run first refreshes the lists (``apt-get update`` / ``dnf makecache``, unless
``refresh: false``), then applies what is pending, reports versions before and after, and flags
when a reboot is required
(``/var/run/reboot-required`` on Debian/Ubuntu, ``needs-restarting -r`` on RHEL-likes).
Idempotent: nothing upgradable, nothing run. Sandbox hosts have no package manager of their own:
the step reports that and changes nothing (it never upgrades the machine pitstop runs on).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..connectors.base import Connection
from ..context import RunContext
from ..errors import StepFailed
from ..model import StepOutcome
from ..registry import Placement, Target, has_work, planner, step
from ..work import HasWork
from .hostutil import has_command, is_sandbox

PackageName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9.+_:-]{0,127}$")]
Manager = Literal["apt", "dnf", "yum"]
_INST = re.compile(r"^Inst (\S+) (?:\[([^\]]+)\] )?\((\S+)")


class PackagesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    manager: Literal["auto", "apt", "dnf", "yum"] = "auto"
    packages: list[PackageName] = Field(default_factory=list, description="only these (default: everything)")
    sudo: bool = False
    timeout_s: float = Field(1800, gt=0)
    refresh: bool = Field(True, description="refresh the package lists before the run (apt-get update / makecache)")


class Upgrade(BaseModel):
    name: str
    before: str | None
    candidate: str
    after: str | None = None


def detect(conn: Connection, wanted: str) -> Manager | None:
    if wanted != "auto":
        return wanted  # type: ignore[return-value]
    for mgr, probe in (("apt", "apt-get"), ("dnf", "dnf"), ("yum", "yum")):
        if has_command(conn, probe):
            return mgr  # type: ignore[return-value]
    return None


def pending(conn: Connection, mgr: Manager, p: PackagesParams) -> list[Upgrade]:
    """What an update would change (read-only)."""
    if mgr == "apt":
        argv = ["apt-get", "-s", "-q", "-o", "Debug::NoLocking=1"]
        argv += ["install", "--only-upgrade", "--", *p.packages] if p.packages else ["upgrade"]
        res = conn.run(argv, check=False, timeout=p.timeout_s)
        if res.exit_code != 0:
            raise StepFailed(f"apt-get simulation exited {res.exit_code}: {res.stderr.strip()[-200:]}")
        return [Upgrade(name=m.group(1), before=m.group(2), candidate=m.group(3))
                for m in map(_INST.match, res.stdout.splitlines()) if m]
    res = conn.run([mgr, "-q", "check-update", *p.packages], check=False, timeout=p.timeout_s)
    if res.exit_code not in (0, 100):
        raise StepFailed(f"{mgr} check-update exited {res.exit_code}: {res.stderr.strip()[-200:]}")
    ups = []
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and "." in parts[0] and not line.startswith(" "):
            name = parts[0].rsplit(".", 1)[0]
            ups.append(Upgrade(name=name, before=None, candidate=parts[1]))
    installed = versions(conn, mgr, [u.name for u in ups])
    for u in ups:
        u.before = installed.get(u.name)
    return ups


def versions(conn: Connection, mgr: Manager, names: list[str]) -> dict[str, str]:
    if not names:
        return {}
    if mgr == "apt":
        argv = ["dpkg-query", "-W", "-f=${Package}\t${Version}\n", "--", *names]
    else:
        argv = ["rpm", "-q", "--qf", "%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\n", "--", *names]
    res = conn.run(argv, check=False)
    out = {}
    for line in res.stdout.splitlines():
        name, _, ver = line.partition("\t")
        if ver:
            out[name.split(":")[0]] = ver.removeprefix("0:")
    return out


def reboot_required(conn: Connection, mgr: Manager, sudo: bool) -> bool:
    if mgr == "apt":
        return conn.exists("/var/run/reboot-required")
    if has_command(conn, "needs-restarting"):
        return conn.run(["needs-restarting", "-r"], check=False, sudo=sudo).exit_code == 1
    return False


def refresh(conn: Connection, mgr: Manager, p: PackagesParams) -> None:
    """Fetch the current package lists, so the run upgrades to what the mirrors have today."""
    if mgr == "apt":
        argv = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=120", "update"]
    else:
        argv = [mgr, "-q", "makecache"]
    res = conn.run(argv, check=False, sudo=p.sudo, timeout=p.timeout_s)
    if res.exit_code != 0:
        raise StepFailed(f"{argv[0]} {argv[-1]} exited {res.exit_code}: {res.stderr.strip()[-300:]}")


def _apply(conn: Connection, mgr: Manager, p: PackagesParams) -> None:
    if mgr == "apt":
        argv = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q", "-o", "Dpkg::Options::=--force-confold",
                "-o", "DPkg::Lock::Timeout=120"]
        argv += ["install", "--only-upgrade", "--", *p.packages] if p.packages else ["upgrade"]
    else:
        argv = [mgr, "-y", "-q", "upgrade", *p.packages]
    conn.run(argv, sudo=p.sudo, timeout=p.timeout_s)


@step("packages.update", params=PackagesParams, placement=Placement.INSIDE, target=Target.HOSTS)
def packages_update(ctx: RunContext, params: PackagesParams, host: str) -> StepOutcome:
    """Update packages (apt/dnf/yum); report versions before and after and whether a reboot is needed."""
    conn = ctx.host(host)
    if is_sandbox(conn):
        return StepOutcome(changed=False, summary="sandbox host: no package manager of its own, nothing updated")
    mgr = detect(conn, params.manager)
    if mgr is None:
        raise StepFailed(f"{host}: no apt-get, dnf or yum found")
    if params.refresh:
        refresh(conn, mgr, params)
    ups = pending(conn, mgr, params)
    if ups:
        _apply(conn, mgr, params)
        after = versions(conn, mgr, [u.name for u in ups])
        for u in ups:
            u.after = after.get(u.name)
    reboot = reboot_required(conn, mgr, params.sudo)
    data = {"manager": mgr, "upgraded": [u.model_dump() for u in ups], "reboot_required": reboot}
    ctx.event("packages.updated", host=host, **data)
    return StepOutcome(changed=bool(ups), data=data,
                       summary=f"{len(ups)} package(s) updated" + ("; REBOOT REQUIRED" if reboot else ""))


@planner("packages.update")
def plan_packages(ctx: RunContext, params: PackagesParams, host: str) -> list[str]:
    conn = ctx.host(host)
    if is_sandbox(conn):
        return ["sandbox host: nothing to update"]
    mgr = detect(conn, params.manager)
    if mgr is None:
        return ["no apt-get, dnf or yum found"]
    ups = pending(conn, mgr, params)
    lists = "the run refreshes the package lists first" if params.refresh else "from the package lists as they are"
    return [f"{mgr}: {len(ups)} package(s) to update ({lists})"] + [
        f"{u.name} {u.before or '?'} -> {u.candidate}" for u in ups]


@has_work("packages.update")
def packages_work(ctx: RunContext, params: PackagesParams, host: str) -> HasWork:
    conn = ctx.host(host)
    if is_sandbox(conn):
        return HasWork.no("sandbox host: nothing to update")
    mgr = detect(conn, params.manager)
    if mgr is None:
        return HasWork.no("no apt-get, dnf or yum")
    ups = pending(conn, mgr, params)
    if ups:
        return HasWork.yes(f"{len(ups)} package(s) to update")
    if params.refresh:  # the lists as they are say nothing; the run refreshes them first
        return HasWork.unknown("nothing pending in the current package lists, which the run refreshes first")
    return HasWork.no("nothing to update")
