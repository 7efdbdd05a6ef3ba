"""``disk.reclaim``: free disk space — package caches and temp files older than N days.

Package caches are emptied by deleting downloaded package files (``*.deb`` under
``/var/cache/apt/archives``, ``*.rpm`` under ``/var/cache/dnf`` and ``/var/cache/yum``), which is
what ``apt-get clean`` / ``dnf clean packages`` do, but path-based so it also works on sandbox
hosts and can say exactly what it would free. Temp directories lose regular files not modified
for ``temp_older_than_days``. Idempotent: a second run finds nothing.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..connectors.base import Connection
from ..context import RunContext
from ..model import StepOutcome
from ..registry import Placement, Target, planner, step
from .hostutil import AbsPath, chunks, find_files, human_bytes

PACKAGE_CACHES = {"/var/cache/apt/archives": "*.deb", "/var/cache/dnf": "*.rpm", "/var/cache/yum": "*.rpm"}


class ReclaimParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    package_caches: bool = True
    temp_dirs: list[AbsPath] = Field(default_factory=lambda: ["/tmp", "/var/tmp"])  # noqa: S108 - what we clean
    temp_older_than_days: int = Field(7, ge=1)
    sudo: bool = False


def _targets(conn: Connection, p: ReclaimParams) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    if p.package_caches:
        for path, name in PACKAGE_CACHES.items():
            found += find_files(conn, path, "-name", name)
    for path in p.temp_dirs:
        found += find_files(conn, path, "-mtime", f"+{p.temp_older_than_days}")
    return found


@step("disk.reclaim", params=ReclaimParams, placement=Placement.OUTSIDE, target=Target.HOSTS)
def disk_reclaim(ctx: RunContext, params: ReclaimParams, host: str) -> StepOutcome:
    """Reclaim disk space: package caches and old temp files."""
    conn = ctx.host(host)
    found = _targets(conn, params)
    for chunk in chunks([p for _, p in found]):
        conn.run(["rm", "-f", "--", *chunk], sudo=params.sudo)
    freed = sum(s for s, _ in found)
    ctx.event("disk.reclaimed", host=host, files=len(found), bytes=freed)
    return StepOutcome(changed=bool(found), summary=f"{len(found)} file(s) removed, {human_bytes(freed)} freed",
                       data={"files": len(found), "bytes": freed})


@planner("disk.reclaim")
def plan_reclaim(ctx: RunContext, params: ReclaimParams, host: str) -> list[str]:
    found = _targets(ctx.host(host), params)
    return [f"remove {len(found)} file(s), free {human_bytes(sum(s for s, _ in found))}"]
