"""The approval gate on Prefect: the flow run pauses with a typed input form and is resumed with a decision.

All of pitstop's Prefect pause/resume code is here (the engine never imports Prefect):

* :func:`prefect_waiter` — inside a flow run on a Prefect *server* (``PREFECT_API_URL`` set), a waiter that
  calls ``pause_flow_run(wait_for_input=<typed model>, timeout=...)``. The model offers the request's
  approvers as a choice, a decision (approve / reject) and a comment; its description (shown above the form
  in the UI) says what the run will do once approved. Without a server (Prefect's ephemeral API lives inside
  the running process, so nobody else could reach a form) the file waiter is used.
* :func:`resume_with` — ``pitstop approve`` / ``reject`` for a paused flow run: ``resume_flow_run`` with the
  same input the UI form sends. The Prefect server validates the input against the form's schema.

Prefect's open-source server does not authenticate whoever fills in the form: the approver is the name they
choose (docs/approvals.md).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from pydantic import Field, create_model

from ..approval import ApprovalDecision, ApprovalRequest, Decision
from ..errors import InputError, PitstopError

if TYPE_CHECKING:
    from ..context import RunContext

POLL_S = 2  # how often the paused flow run asks the server whether it was resumed


def approval_form(request: ApprovalRequest) -> Any:
    """The typed input of the pause: a ``RunInput`` model the Prefect UI renders as a form."""
    from prefect.input import RunInput

    approver_type: Any = Literal[tuple(request.approvers)]  # type: ignore[valid-type]
    model = create_model(
        "PitstopApproval", __base__=RunInput,
        approver=(approver_type, Field(description="who decides (Prefect's open-source server does not check it)")),
        decision=(Decision, Field(description="approve: the run goes on; reject: it ends, nothing destructive ran")),
        comment=(str, Field(min_length=1, max_length=2000, description="why (audit log and report)")))
    return model.with_initial_data(description=form_description(request))


def form_description(request: ApprovalRequest) -> str:
    what = "\n".join(request.what) or "(nothing described)"
    return (f"### pitstop: approve `{request.runbook}` on `{request.environment}`?\n\n"
            f"The run waits **before `{request.before}`** ({request.stage}); the maintenance window has not "
            f"opened. Approvers: {', '.join(request.approvers)}. Without a decision by {request.deadline} the run "
            f"is aborted ({request.on_timeout}).\n\nWhat runs once approved:\n\n```\n{what}\n```\n\n"
            "The approver's name is recorded as chosen: Prefect's open-source server does not authenticate it.")


class PrefectWaiter:
    mechanism: Literal["cli", "prefect"] = "prefect"

    def __init__(self, flow_run_id: str):
        self.flow_run_id: str | None = flow_run_id

    def wait(self, request: ApprovalRequest, ctx: RunContext) -> ApprovalDecision | None:
        from prefect.exceptions import FlowPauseTimeout
        from prefect.flow_runs import pause_flow_run

        try:
            got = pause_flow_run(wait_for_input=approval_form(request), timeout=max(1, round(request.timeout_s)),
                                 poll_interval=POLL_S, key=f"approval-{request.request_id}")
        except FlowPauseTimeout:
            self._running_again(ctx)
            return None
        return ApprovalDecision(run_id=request.run_id, request_id=request.request_id, approver=got.approver,
                                decision=Decision(got.decision), comment=got.comment, via="prefect",
                                decided_at=datetime.now(UTC).isoformat())

    def _running_again(self, ctx: RunContext) -> None:
        """A pause that timed out leaves the flow run Paused: set it Running so the run can end safely (report,
        notifications) and Prefect records its final state."""
        from prefect.client.orchestration import get_client
        from prefect.states import Running

        assert self.flow_run_id is not None
        try:
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(UUID(self.flow_run_id), Running(), force=True)
        except Exception as exc:  # noqa: BLE001 - the run still ends not-approved; the state is cosmetic
            ctx.event("approval.state_not_restored", error=ctx.redact(f"{type(exc).__name__}: {exc}")[:300])


def prefect_waiter() -> PrefectWaiter | None:
    """A Prefect pause waiter when this code runs inside a flow run on a Prefect server; else None."""
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL

    from ..prefect_server import is_local_api

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None or not (PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL")):
        return None
    if is_local_api():  # the CLI's own local server (as Prefect's ephemeral API was): nobody else reaches it
        return None
    return PrefectWaiter(str(ctx.flow_run.id))


def resume_with(request: ApprovalRequest, approver: str, decision: Decision, comment: str) -> None:
    """Resume the paused flow run with the decision, as the UI form does."""
    from prefect.exceptions import FlowPauseTimeout, NotPausedError
    from prefect.flow_runs import resume_flow_run

    if not request.flow_run_id:
        raise InputError(f"run {request.run_id} waits on Prefect but its request names no flow run")
    if not os.environ.get("PREFECT_API_URL"):
        raise InputError(f"run {request.run_id} is paused on a Prefect server: set PREFECT_API_URL to reach it")
    try:
        resume_flow_run(UUID(request.flow_run_id), run_input={"approver": approver, "decision": decision.value,
                                                              "comment": comment})
    except NotPausedError:
        raise InputError(f"flow run {request.flow_run_id} is not paused (decided already, or ended)") from None
    except FlowPauseTimeout:
        raise InputError(f"flow run {request.flow_run_id} can no longer be resumed: its approval timed out") from None
    except RuntimeError as exc:  # the server refused the input (schema) or the state change
        raise InputError(f"the Prefect server refused to resume flow run {request.flow_run_id}: {exc}") from None
    except (OSError, ValueError) as exc:
        raise PitstopError(f"cannot resume flow run {request.flow_run_id} through {os.environ['PREFECT_API_URL']}: "
                           f"{type(exc).__name__}: {exc}") from None
