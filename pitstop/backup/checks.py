"""Backup's check: ``check.backup_verified``, this run's backup exists and was verified by a restore (read from
the backup plug-in's own typed state)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ..checks import check, verdict
from ..context import RunContext
from ..model import CheckResult
from .state import BackupState


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackupVerifiedParams(_Params):
    pass


@check("backup_verified", params=BackupVerifiedParams)
def backup_verified(ctx: RunContext, params: BackupVerifiedParams) -> CheckResult:
    """This run's backup exists and was verified by a restore."""
    b = ctx.state.of(BackupState).backup or {}
    ok = bool(b.get("verified"))
    return CheckResult(name="backup_verified", status=verdict(ok),
                       observed="verified" if ok else ("not verified" if b else "no backup"), expected="verified",
                       evidence={"location": b.get("location"), "sha256": b.get("sha256"),
                                 "verification": b.get("verification")})
