"""``pitstop approve`` / ``pitstop reject``: decide on a run that waits for approval (docs/approvals.md).

The approver is the OS user running the command. A run waiting through files (``--engine local``, or a
flow run without a Prefect server) reads the decision file this writes into its run folder; a flow run
paused on a Prefect server is resumed through Prefect's API with the same typed input the UI form sends.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .approval import Decision
from .errors import InputError

EnvOpt = Annotated[str, typer.Option("--env", "-e", help="environment name (config/<env>.yaml) or a path")]
CommentOpt = Annotated[str, typer.Option("--comment", "-m", help="why: goes into the audit log and the report")]
RunIdArg = Annotated[str, typer.Argument(help="the run waiting for approval (pitstop report list shows it)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]


def decide(run_id: str, env: str, decision: Decision, comment: str, as_json: bool) -> None:
    from .approval_files import os_approver, pending, write_decision
    from .config import load_config
    from .ids import check_run_id

    if not comment.strip():
        raise InputError("--comment must say why (it goes into the audit log and the report)")
    cfg = load_config(env)
    check_run_id(run_id)
    run_dir = cfg.resolve(cfg.reports.dir) / run_id
    if not (run_dir / "audit.jsonl").is_file():
        raise InputError(f"no run {run_id!r} under {run_dir.parent}")
    request = pending(run_dir)
    approver = os_approver()
    if approver not in request.approvers:
        raise InputError(f"{approver!r} is not an approver of run {run_id} (approvers: "
                         f"{', '.join(request.approvers)})")
    if request.mechanism == "prefect":
        from .prefect_adapter.approval import resume_with

        resume_with(request, approver, decision, comment.strip())
        where = f"flow run {request.flow_run_id} resumed through the Prefect API"
    else:
        where = str(write_decision(run_dir, request, approver, decision, comment.strip()))
    verb = "approved" if decision == Decision.APPROVE else "rejected"
    if as_json:
        from .console import emit_json

        emit_json({"run_id": run_id, "decision": decision.value, "approver": approver, "via": request.mechanism,
                   "where": where})
    else:
        from .console import safe_console

        safe_console().print(f"run {run_id} {verb} by {approver} ({where})", markup=False)


def register(app: typer.Typer) -> None:
    @app.command()
    def approve(run_id: RunIdArg, env: EnvOpt, comment: CommentOpt, as_json: JsonOpt = False) -> None:
        """Approve a run that waits for approval; it goes on within seconds."""
        decide(run_id, env, Decision.APPROVE, comment, as_json)

    @app.command()
    def reject(run_id: RunIdArg, env: EnvOpt, comment: CommentOpt, as_json: JsonOpt = False) -> None:
        """Reject a run that waits for approval: it ends not-approved (exit 4), nothing destructive ran."""
        decide(run_id, env, Decision.REJECT, comment, as_json)
