"""The approval gate of a run (docs/approvals.md): at the plan's wait point it writes the request, tells the
approvers' audience what will happen, waits on a :class:`~pitstop.approval.Waiter` and records the decision;
a rejection or no decision ends the run ``not-approved`` before anything destructive ran."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .approval import ApprovalRequest, Decision, Waiter, duration_text
from .approval_files import FileWaiter, write_request
from .placement import WaitPoint
from .plan import Plan, PlannedStep, describe_changes

if TYPE_CHECKING:
    from .context import RunContext


def describe_rest(ctx: RunContext, plan: Plan, point: WaitPoint) -> list[str]:
    """The part of the plan that runs once approved, read-only: steps, hosts, and what they would change
    (rows and partitions to go, from the steps' own planners)."""
    ids = [s.id for s in plan.steps]
    rest = [s.model_copy(deep=True) for s in plan.steps[ids.index(point.step):]]
    try:
        rest = describe_changes(ctx, Plan(environment=plan.environment, runbook=plan.runbook,
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
                         f"{duration_text(request.timeout_s)}, run aborted (nothing destructive ran)",
                         severity="failure")
            return self._refused(request, f"no decision within {duration_text(request.timeout_s)} "
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
