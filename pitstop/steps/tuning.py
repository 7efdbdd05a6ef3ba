"""Server tuning on hosts. Every step is idempotent and can say what it would change.

``tuning.logs``: compress ``*.log`` files older than ``compress_after_days`` and delete compressed
logs older than ``delete_after_days`` in the configured directories. Commands are argument lists;
paths never pass through a shell.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..connectors.base import Connection
from ..context import RunContext
from ..model import StepOutcome
from ..registry import Placement, Target, planner, step


class LogParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: list[str] = Field(default_factory=lambda: ["/var/log/app"], min_length=1)
    pattern: str = Field("*.log", pattern=r"^[A-Za-z0-9_.*?\[\]-]+$")
    compress_after_days: int = Field(1, ge=0)
    delete_after_days: int = Field(30, ge=1)


def _find(conn: Connection, path: str, name: str, older_days: int) -> list[str]:
    real = conn.path(path)
    argv = ["find", real, "-xdev", "-type", "f", "-name", name, "-mtime", f"+{older_days}", "-print0"]
    out = conn.run(argv, check=False)
    if out.exit_code not in (0, 1):
        return []
    return sorted(p for p in out.stdout.split("\0") if p)


def _targets(conn: Connection, params: LogParams) -> tuple[list[str], list[str]]:
    compress, delete = [], []
    for path in params.paths:
        if not conn.exists(path):
            continue
        compress += _find(conn, path, params.pattern, params.compress_after_days)
        delete += _find(conn, path, params.pattern + ".gz", params.delete_after_days)
    return compress, delete


@step("tuning.logs", params=LogParams, placement=Placement.OUTSIDE, target=Target.HOSTS)
def tuning_logs(ctx: RunContext, params: LogParams, host: str) -> StepOutcome:
    """Rotate logs: compress old logs, delete old compressed logs."""
    conn = ctx.host(host)
    compress, delete = _targets(conn, params)
    for chunk in _chunks(compress):
        conn.run(["gzip", "-f", "--", *chunk])
    for chunk in _chunks(delete):
        conn.run(["rm", "-f", "--", *chunk])
    return StepOutcome(changed=bool(compress or delete),
                       summary=f"{len(compress)} compressed, {len(delete)} deleted",
                       data={"compressed": len(compress), "deleted": len(delete)})


@planner("tuning.logs")
def plan_logs(ctx: RunContext, params: LogParams, host: str) -> list[str]:
    compress, delete = _targets(ctx.host(host), params)
    return [f"compress {len(compress)} log file(s), delete {len(delete)} old archive(s)"]


def _chunks(items: list[str], size: int = 200) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
