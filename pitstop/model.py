"""Typed results passed between steps, the executor, the audit log and the reports."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class Status(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    FAILED_VERIFICATION = "failed_verification"
    NOT_APPROVED = "not-approved"  # rejected, or nobody decided in time: nothing destructive ran (docs/approvals.md)


class Trigger(StrEnum):
    SCHEDULED = "scheduled"
    MANUAL = "manual"
    EMERGENCY = "emergency"


class CommandResult(BaseModel):
    argv: list[str]
    exit_code: int
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class HostResult(BaseModel):
    host: str
    status: Status
    changed: bool = False
    summary: str = ""
    error: str | None = None
    duration_s: float = 0.0
    commands: list[dict[str, Any]] = Field(default_factory=list)
    data: dict[str, Any] = Field(default_factory=dict)


class StepOutcome(BaseModel):
    """What a step did. ``data`` feeds the report (backup details, rows purged, check evidence)."""

    changed: bool = False
    summary: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class CheckStatus(StrEnum):
    PASS = "pass"  # noqa: S105 - not a password
    WARN = "warn"
    FAIL = "fail"


class CheckResult(BaseModel):
    name: str
    status: CheckStatus
    observed: Any = None
    expected: Any = None
    evidence: dict[str, Any] = Field(default_factory=dict)
    duration_s: float = 0.0
