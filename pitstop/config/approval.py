"""``approval:``, in a runbook or an environment config: a named person approves before the run goes on.

The run waits *before* the first step of ``before`` (or of any later stage) and in any case before the
maintenance window opens: it never waits with the site in maintenance mode. Stages that only run inside
or after the window cannot be named (``maintenance-off``, ``post-verification``, ``report``): the
destructive part would be over. See docs/approvals.md.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..units import Duration
from .base import Strict

# the stages a run may wait before (pitstop.runbook.Stage values, in order; the config cannot import the
# runbook module): tests/approval checks that they are the first five stages of pitstop.runbook.STAGE_ORDER
WAITABLE_STAGES = ("preflight", "pre-backup", "maintenance-on", "database-cleanup", "server-tuning")
APPROVER_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$"


class ApprovalConfig(Strict):
    before: str = Field("maintenance-on", description="the stage the run waits before: " + ", ".join(WAITABLE_STAGES)
                        + " (the wait comes before its first step and always before the window opens)")
    approvers: list[str] = Field(default_factory=list, description="who may decide: OS user names for "
                                 "`pitstop approve`, the names offered in the Prefect UI form")
    audience: str = Field("ops", description="the notification audience told what the run will do and that it "
                          "waits")
    timeout: Duration = Field("30m", validate_default=True,  # type: ignore[assignment]
                              description="how long the run waits for a decision")
    on_timeout: Literal["abort"] = Field("abort", description="what a run nobody decided on does: abort "
                                         "(status not-approved, nothing destructive ran)")
    skip: bool = Field(False, description="an emergency runbook only: no approval for this runbook (needs "
                       "`reason`); the report says it was skipped")
    reason: str = Field("", description="why approval is skipped (with `skip: true`)")

    @field_validator("before")
    @classmethod
    def _before(cls, v: str) -> str:
        if v not in WAITABLE_STAGES:
            raise ValueError(f"{v!r} is not a stage a run can wait before: expected one of "
                             f"{', '.join(WAITABLE_STAGES)} (the run waits before the maintenance window opens, "
                             "never inside it or after it)")
        return v

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, v: list[str]) -> list[str]:
        import re

        for name in v:
            if not re.match(APPROVER_PATTERN, name):
                raise ValueError(f"approver {name!r}: expected a user name (letters, digits, _ . @ -)")
        if len(set(v)) != len(v):
            raise ValueError("an approver is listed twice")
        return v

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= v <= timedelta(days=7):
            raise ValueError("expected a timeout between 1s and 7d")
        return v

    @model_validator(mode="after")
    def _skip_or_approvers(self) -> ApprovalConfig:
        if self.skip and not self.reason.strip():
            raise ValueError("`skip: true` needs a `reason` (it goes into the report)")
        if not self.skip and not self.approvers:
            raise ValueError("expected at least one name in `approvers` (or `skip: true` with a `reason` in an "
                             "emergency runbook)")
        return self
