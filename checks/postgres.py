"""PostgreSQL checks."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from pitstop.checks import check
from pitstop.context import RunContext
from pitstop.model import CheckResult, CheckStatus
from pitstop.registry import NoParams, Target


@check("postgres_connect", target=Target.DATABASE)
def postgres_connect(ctx: RunContext, params: NoParams) -> CheckResult:
    """The database accepts connections and answers a query."""
    with ctx.db.connect() as conn:
        row = conn.execute("SELECT 1, current_setting('server_version'), pg_is_in_recovery()").fetchone()
    assert row is not None
    ok = row[0] == 1 and not row[2]
    return CheckResult(name="postgres_connect", status=CheckStatus.PASS if ok else CheckStatus.FAIL,
                       observed=f"answered, PostgreSQL {row[1]}" + (" (read-only replica)" if row[2] else ""),
                       expected="answers and is a primary", evidence={"server_version": row[1], "in_recovery": row[2]})


class BackupVerifiedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@check("backup_verified", params=BackupVerifiedParams)
def backup_verified(ctx: RunContext, params: BackupVerifiedParams) -> CheckResult:
    """This run's backup exists and was verified by a restore."""
    b = ctx.state.get("backup") or {}
    ok = bool(b.get("verified"))
    return CheckResult(name="backup_verified", status=CheckStatus.PASS if ok else CheckStatus.FAIL,
                       observed="verified" if ok else ("not verified" if b else "no backup"), expected="verified",
                       evidence={"location": b.get("location"), "sha256": b.get("sha256")})
