"""``disk.reclaim``: free disk space — package caches and temp files older than N days.

Package caches are emptied by deleting downloaded package files (``*.deb`` under
``/var/cache/apt/archives``, ``*.rpm`` under ``/var/cache/dnf`` and ``/var/cache/yum``), which is
what ``apt-get clean`` / ``dnf clean packages`` do, but path-based so it also works on sandbox
hosts and can say exactly what it would free. Temp directories lose regular files not modified
for ``temp_older_than_days``. Idempotent: a second run finds nothing.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..context import RunContext
from ..model import StepOutcome
from ..registry import Placement, Target, has_work, planner, step
from ..work import HasWork
from .hostutil import AbsPath, delete_files, find_files, human_bytes

PACKAGE_CACHES = {"/var/cache/apt/archives": "*.deb", "/var/cache/dnf": "*.rpm", "/var/cache/yum": "*.rpm"}


class ReclaimParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    package_caches: bool = True
    temp_dirs: list[AbsPath] = Field(default_factory=lambda: ["/tmp", "/var/tmp"])  # noqa: S108 - what we clean
    temp_older_than_days: int = Field(7, ge=1)
    sudo: bool = False


# systemd's PrivateTmp directories belong to running services (systemd-tmpfiles skips them too).
KEEP_IN_TEMP = ("!", "-path", "*/systemd-private-*")


def _tests(p: ReclaimParams) -> list[tuple[str, tuple[str, ...]]]:
    """(directory, find tests) for everything the step removes."""
    out: list[tuple[str, tuple[str, ...]]] = []
    if p.package_caches:
        out += [(path, ("-name", name)) for path, name in PACKAGE_CACHES.items()]
    out += [(path, ("-mtime", f"+{p.temp_older_than_days}", *KEEP_IN_TEMP)) for path in p.temp_dirs]
    return out


@step("disk.reclaim", params=ReclaimParams, placement=Placement.OUTSIDE, target=Target.HOSTS)
def disk_reclaim(ctx: RunContext, params: ReclaimParams, host: str) -> StepOutcome:
    """Reclaim disk space: package caches and old temp files (find -delete: no symlink is followed)."""
    conn = ctx.host(host)
    found: list[tuple[int, str]] = []
    problems: list[str] = []
    refused: list[str] = []
    for path, tests in _tests(params):
        got = delete_files(conn, path, *tests, sudo=params.sudo)
        found += got.files
        problems += got.problems
        refused += got.refused
    freed = sum(s for s, _ in found)
    ctx.event("disk.reclaimed", host=host, files=len(found), bytes=freed, problems=len(problems), refused=refused)
    summary = f"{len(found)} file(s) removed, {human_bytes(freed)} freed"
    if problems:
        summary += f"; {len(problems)} could not be removed (first: {problems[0][:200]})"
    if refused:
        summary += f"; {len(refused)} director(ies) refused, not safe to clean as root (first: {refused[0][:200]})"
    data: dict[str, object] = {"files": len(found), "bytes": freed}
    if problems:
        data["problems"] = problems[:20]
    if refused:
        data["refused"] = refused
    return StepOutcome(changed=bool(found), summary=summary, data=data)


@planner("disk.reclaim")
def plan_reclaim(ctx: RunContext, params: ReclaimParams, host: str) -> list[str]:
    conn = ctx.host(host)
    found = [f for path, tests in _tests(params) for f in find_files(conn, path, *tests)]
    return [f"remove {len(found)} file(s), free {human_bytes(sum(s for s, _ in found))}"]


@has_work("disk.reclaim")
def reclaim_work(ctx: RunContext, params: ReclaimParams, host: str) -> HasWork:
    conn = ctx.host(host)
    found = [f for path, tests in _tests(params) for f in find_files(conn, path, *tests)]
    return HasWork.yes(f"{len(found)} file(s) to remove") if found else HasWork.no("no cache or old temp file")
