"""The approval gate: a run waits for a named approver before its destructive part (docs/approvals.md).

Where it waits (:func:`wait_point`, shown by ``pitstop plan``): before the first step, in the order the
plan runs them, whose stage is ``approval.before`` or a later one, and in any case before the window's first
step. So the run never waits with the site in maintenance mode, and nothing of the named stage or after it
has run. What the run waits *on* is a :class:`Waiter`: :class:`pitstop.approval_files.FileWaiter` (a
decision file in the run folder, written by ``pitstop approve``/``reject``) or, in a flow run on a Prefect
server, Prefect's own pause with a typed input form (``pitstop/prefect_adapter/approval.py``). A rejection, or no
decision before the timeout, ends the run ``not-approved``: nothing destructive ran, no window opened.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, Field

from .config.approval import APPROVER_PATTERN

if TYPE_CHECKING:
    from .config import ApprovalConfig, EnvironmentConfig
    from .context import RunContext
    from .plan import Plan, PlannedStep, WaitPoint
    from .runbook import Runbook

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
    from .plan import Phase, WaitPoint
    from .runbook import STAGE_ORDER, Stage

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
            f"{' or '.join(point.approvers)}; after {_human(point.timeout_s)} without a decision: "
            f"{point.on_timeout} (declared in the {point.source})")


def _human(seconds: float) -> str:
    from .units import format_duration

    return str(format_duration(timedelta(seconds=seconds)))


def describe_rest(ctx: RunContext, plan: Plan, point: WaitPoint) -> list[str]:
    """The part of the plan that runs once approved, read-only: steps, hosts, and what they would change
    (rows and partitions to go, from the steps' own planners)."""
    from .plan import Plan as PlanModel
    from .plan import describe_changes

    ids = [s.id for s in plan.steps]
    rest = [s.model_copy(deep=True) for s in plan.steps[ids.index(point.step):]]
    try:
        rest = describe_changes(ctx, PlanModel(environment=plan.environment, runbook=plan.runbook,
                                               steps=rest)).steps
    except Exception as exc:  # noqa: BLE001 - the request goes out anyway, saying what could not be told
        return [f"(what the steps would change cannot be told: {ctx.redact(str(exc))[:200]})"]
    lines = []
    for s in rest:
        where = f" on {', '.join(s.hosts)}" if s.hosts else ""
        lines.append(f"[{s.phase.value}] {s.stage.value}: {s.label} ({s.uses}){' DESTRUCTIVE' if s.destructive else ''}"
                     f"{where}")
        lines += [f"    {w}" for w in s.would[:20]]
    return lines


class ApprovalGate:
    """One per run. :meth:`admit` is the executor's hook before each unit of steps; at the wait point it
    asks, waits and records; its answer is None (go on) or the failure record of a run not approved."""

    def __init__(self, ctx: RunContext, plan: Plan, waiter: Waiter | None = None):
        self.ctx, self.plan, self.point = ctx, plan, plan.approval
        self.waiter = waiter
        self.outcome: dict[str, Any] | None = None
        self.done = False

    def admit(self, step: PlannedStep) -> dict[str, Any] | None:
        if self.point is None or self.done or step.id != self.point.step:
            return self.outcome
        self.done = True
        if self.point.skipped is not None:
            self.ctx.event("approval.skipped", reason=self.point.skipped, runbook=self.ctx.runbook.name,
                           source=self.point.source)
            return None
        earlier = self._earlier_decision()
        if earlier is not None:  # a resumed run: approved by its first attempt, not asked again
            self.ctx.event("approval.already_given", approver=earlier.get("approver"), at=earlier.get("decided_at"))
            return None
        self.outcome = self._ask()
        return self.outcome

    # -- internals ------------------------------------------------------------------------------------
    def _earlier_decision(self) -> dict[str, Any] | None:
        decided = [e["data"] for e in self.ctx.audit.events if e["kind"] == "approval.decided"]
        return decided[-1] if decided and decided[-1].get("decision") == Decision.APPROVE.value else None

    def _request(self, waiter: Waiter) -> ApprovalRequest:
        assert self.point is not None
        now = datetime.now(UTC)
        return ApprovalRequest(
            run_id=self.ctx.run_id, request_id=uuid.uuid4().hex[:12], environment=self.ctx.cfg.name,
            runbook=self.ctx.runbook.name, trigger=self.ctx.options.trigger.value, before=self.point.label,
            stage=self.point.stage.value, approvers=self.point.approvers, audience=self.point.audience,
            timeout_s=self.point.timeout_s, on_timeout=self.point.on_timeout, requested_at=now.isoformat(),
            deadline=(now + timedelta(seconds=self.point.timeout_s)).isoformat(), mechanism=waiter.mechanism,
            flow_run_id=waiter.flow_run_id, source=self.point.source,
            what=describe_rest(self.ctx, self.plan, self.point))

    def _ask(self) -> dict[str, Any] | None:
        from .approval_files import FileWaiter, write_request

        ctx = self.ctx
        waiter = self.waiter or FileWaiter()
        request = self._request(waiter)
        write_request(ctx.run_dir, request)
        ctx.event("approval.requested", **request.model_dump())
        how = (f"pitstop approve {ctx.run_id} --env {ctx.cfg.name} --comment '...' (or pitstop reject ...)")
        if waiter.mechanism == "prefect":
            how += f"; or the Prefect UI: flow run {waiter.flow_run_id}, Resume, fill in the form"
        self._notify("approval.requested", f"approval needed: {ctx.runbook.name} on {ctx.cfg.name} waits before "
                     f"{request.before!r}", "\n".join([f"approvers: {', '.join(request.approvers)}; decide by "
                                                       f"{request.deadline} ({how})", "", "what will happen:",
                                                       *request.what]), "warning")
        t0 = time.monotonic()
        try:
            decision = waiter.wait(request, ctx)
        except Exception as exc:  # noqa: BLE001 - whatever broke the wait, the run does not go on unapproved
            error = ctx.redact(f"{type(exc).__name__}: {exc}")[:300]
            ctx.event("approval.failed", request_id=request.request_id, error=error)
            return self._refused(request, f"the wait for approval failed ({error})", "ApprovalFailed")
        waited = round(time.monotonic() - t0, 3)
        if decision is None:
            ctx.event("approval.timed_out", request_id=request.request_id, timeout_s=request.timeout_s,
                      on_timeout=request.on_timeout, waited_s=waited)
            self._notify("approval.timed_out", f"{ctx.runbook.name} on {ctx.cfg.name}: no decision within "
                         f"{_human(request.timeout_s)}, run aborted (nothing destructive ran)", severity="failure")
            return self._refused(request, f"no decision within {_human(request.timeout_s)} "
                                          f"(on_timeout: {request.on_timeout})", "ApprovalTimedOut")
        if decision.approver not in request.approvers or decision.request_id != request.request_id:
            ctx.event("approval.failed", request_id=request.request_id, error=f"a decision by {decision.approver!r}, "
                      "who is not an approver of this request")
            return self._refused(request, f"a decision by {decision.approver!r}, who is not an approver", "NotApproved")
        ctx.event("approval.decided", request_id=request.request_id, decision=decision.decision.value,
                  approver=decision.approver, comment=decision.comment, via=decision.via,
                  authenticated=decision.via == "cli", decided_at=decision.decided_at, waited_s=waited)
        verb = "approved" if decision.decision == Decision.APPROVE else "rejected"
        self._notify(f"approval.{verb}", f"{ctx.runbook.name} on {ctx.cfg.name} {verb} by {decision.approver}",
                     f"comment: {decision.comment}", "info" if verb == "approved" else "failure")
        if decision.decision == Decision.APPROVE:
            return None
        return self._refused(request, f"rejected by {decision.approver}: {decision.comment}", "ApprovalRejected")

    def _refused(self, request: ApprovalRequest, why: str, error_type: str) -> dict[str, Any]:
        """The failure record of a run not approved; everyone told of its start hears it is called off."""
        if self.ctx.notifier is not None:
            self.ctx.notifier.notify("run.cancelled", f"{self.ctx.runbook.name} maintenance called off: not approved",
                                     f"{why}\nNothing destructive ran; the maintenance window did not open.",
                                     severity="warning", status="not-approved")
        return {"stage": request.stage, "step": request.before, "error": self.ctx.redact(why),
                "error_type": error_type}

    def _notify(self, event: str, subject: str, body: str = "", severity: str = "info") -> None:
        """To the approvers' audience only: the request names steps and hosts, which a public audience never
        sees."""
        n = self.ctx.notifier
        if n is None or self.point is None:
            return
        n.notify(event, subject, body, severity=severity, only_audience=self.point.audience)
