"""The approval gate: a run waits for a named approver before its destructive part (docs/approvals.md).

Where it waits (:func:`wait_point`, shown by ``pitstop plan``): before the first step, in the order the
plan runs them, whose stage is ``approval.before`` or a later one, and in any case before the window's first
step. So the run never waits with the site in maintenance mode, and nothing of the named stage or after it
has run. The gate itself (asking, waiting, recording) is :mod:`pitstop.approval_gate`. What the run waits *on*
is a :class:`Waiter`: :class:`pitstop.approval_files.FileWaiter` (a
decision file in the run folder, written by ``pitstop approve``/``reject``) or, in a flow run on a Prefect
server, Prefect's own pause with a typed input form (``pitstop/prefect_adapter/approval.py``). A rejection, or no
decision before the timeout, ends the run ``not-approved``: nothing destructive ran, no window opened.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, Field

from .config.approval import APPROVER_PATTERN
from .placement import Phase, WaitPoint
from .runbook_model import STAGE_ORDER, Stage

if TYPE_CHECKING:
    from .config import ApprovalConfig, EnvironmentConfig
    from .context import RunContext
    from .plan import PlannedStep
    from .runbook_model import Runbook

REQUEST_FILE = "approval-request.json"
DECISION_FILE = "approval-decision.json"


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class ApprovalRequest(BaseModel):
    """What the run waits for, written to the run folder (``approval-request.json``) for ``pitstop approve``."""

    run_id: str
    request_id: str = Field(pattern=r"^[0-9a-f]{12}$")
    environment: str
    runbook: str
    trigger: str
    before: str  # the step label the run waits before
    stage: str
    approvers: list[str]
    audience: str
    timeout_s: float
    on_timeout: str
    requested_at: str
    deadline: str
    mechanism: Literal["cli", "prefect"]
    flow_run_id: str | None = None
    source: str = "runbook"  # where the approval is declared: runbook | environment
    what: list[str] = Field(default_factory=list)  # the part of the plan that runs once approved


class ApprovalDecision(BaseModel):
    """A decision as a waiter hands it to the gate (and as ``approval-decision.json`` holds it)."""

    run_id: str
    request_id: str
    approver: str = Field(pattern=APPROVER_PATTERN)
    decision: Decision
    comment: str = Field(min_length=1, max_length=2000)
    via: Literal["cli", "prefect"]
    decided_at: str


class Waiter(Protocol):
    mechanism: Literal["cli", "prefect"]
    flow_run_id: str | None

    def wait(self, request: ApprovalRequest, ctx: RunContext) -> ApprovalDecision | None:
        """The decision, or None when ``request.timeout_s`` passed without one."""


def effective(cfg: EnvironmentConfig, rb: Runbook) -> tuple[ApprovalConfig, str] | None:
    """The approval that applies to ``rb`` on ``cfg`` and where it is declared: the runbook's own, else the
    environment's."""
    if rb.approval is not None:
        return rb.approval, "runbook"
    if cfg.approval is not None:
        return cfg.approval, "environment"
    return None


def wait_point(cfg: EnvironmentConfig, rb: Runbook, steps: list[PlannedStep]) -> WaitPoint | None:
    found = effective(cfg, rb)
    if found is None or not steps:
        return None
    a, source = found
    rank = STAGE_ORDER.index(Stage(a.before))
    at = next((s for s in steps if STAGE_ORDER.index(s.stage) >= rank or s.phase == Phase.WINDOW), None)
    if a.skip:
        at = steps[0]
    if at is None:
        return None
    return WaitPoint(step=at.id, label=at.label, stage=at.stage, phase=at.phase, approvers=list(a.approvers),
                     audience=a.audience, timeout_s=a.timeout.total_seconds(), on_timeout=a.on_timeout,
                     source=source, skipped=a.reason if a.skip else None)


def plan_line(point: WaitPoint) -> str:
    """One line for ``pitstop plan``."""
    if point.skipped:
        return f"approval: skipped by this emergency runbook ({point.skipped})"
    return (f"approval: the run waits before {point.label!r} ({point.stage.value}, {point.phase.value}) for "
            f"{' or '.join(point.approvers)}; after {duration_text(point.timeout_s)} without a decision: "
            f"{point.on_timeout} (declared in the {point.source})")


def duration_text(seconds: float) -> str:
    from .units import format_duration

    return str(format_duration(timedelta(seconds=seconds)))
