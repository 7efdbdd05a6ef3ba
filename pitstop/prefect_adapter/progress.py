"""pitstop's progress in the flow run's logs (the Logs tab of the Prefect UI), and the flow run's name.

Every line is read off the run's audit log, whose events are redacted before they are written (the run's
secrets never reach the log either way; pitstop.redact also scrubs every log record once a run's secrets are
known). Steps started and finished (with hosts, rows, checks and errors), the window, the approval gate and
the end of the run: what an operator watching the UI needs, one line each.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


def _stamp() -> str:
    from prefect.runtime import flow_run

    start = flow_run.scheduled_start_time or datetime.now(UTC)
    return str(start.astimezone(UTC).strftime("%Y%m%dT%H%MZ"))


def flow_run_name() -> str:
    """``<env>-<runbook>-<trigger>-<scheduled start, UTC>``, e.g. ``shop-monthly-scheduled-20261206T0100Z``, from
    the parameters as given (a path's file stem); :func:`rename` puts the files' own names once they are checked.
    Nothing is read here: the parameters have not been checked yet."""
    from prefect.runtime import flow_run

    p = flow_run.parameters or {}
    env, runbook = (Path(str(p.get(k) or "?")).stem for k in ("env", "runbook"))
    return f"{env}-{runbook}-{p.get('trigger') or 'manual'}-{_stamp()}"


def rename(env_name: str, runbook_name: str, trigger: str) -> None:
    """Name the flow run after the environment's and runbook's own ``name:`` (``env.yaml`` says little), once
    the flow has checked and loaded them. Cosmetic: a failure leaves the first name."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    name = f"{env_name}-{runbook_name}-{trigger}-{_stamp()}"
    if not flow_run.id or flow_run.name == name:
        return
    try:
        from uuid import UUID

        with get_client(sync_client=True) as client:
            client.update_flow_run(UUID(str(flow_run.id)), name=name)
    except Exception:  # noqa: BLE001,S110 - the run goes on under its first name
        pass


def _hosts(d: dict[str, Any]) -> str:
    hosts = d.get("hosts") or []
    if not hosts or not isinstance(hosts, list):
        return ""
    if isinstance(hosts[0], dict):
        return " [" + ", ".join(f"{h.get('host')}: {h.get('status')}" for h in hosts if isinstance(h, dict)) + "]"
    return f" on {', '.join(str(h) for h in hosts)}"


def line(ev: dict[str, Any]) -> tuple[int, str] | None:
    """The log level and line of one audit event, or None for events not worth a line."""
    d, kind = ev.get("data") or {}, ev.get("kind")
    info, warn, error = logging.INFO, logging.WARNING, logging.ERROR
    if kind in ("run.started", "run.resumed") and not d.get("report_only"):
        return info, f"run {d.get('run_id')} {kind.split('.')[1]}: runbook {d.get('runbook')} on " \
                     f"{d.get('environment')} (trigger {d.get('trigger')})"
    if kind == "stage.started":
        return info, f"stage {d.get('stage')} started ({d.get('phase')} window): {', '.join(d.get('steps') or [])}"
    if kind == "stage.finished":
        return (info if d.get("status") == "succeeded" else error), \
            f"stage {d.get('stage')} {d.get('status')} in {d.get('duration_s')}s"
    if kind == "step.started":
        return info, f"step started: {d.get('stage')} / {d.get('step')} ({d.get('uses')}){_hosts(d)}"
    if kind == "step.finished":
        if d.get("status") != "succeeded":
            return error, f"step FAILED: {d.get('stage')} / {d.get('step')}: {d.get('error')}{_hosts(d)}"
        return info, f"step finished: {d.get('stage')} / {d.get('step')} in {d.get('duration_s')}s: " \
                     f"{d.get('summary') or 'ok'}{_hosts(d)}"
    if kind == "step.skipped":
        return info, f"step skipped: {d.get('stage')} / {d.get('step')}: {d.get('reason')}"
    if kind == "step.already_done":
        return info, f"step already done by an earlier attempt: {d.get('stage')} / {d.get('step')}"
    if kind == "check":
        where = f" on {d['host']}" if d.get("host") else ""
        return (info if d.get("status") != "fail" else error), \
            f"check {d.get('name')}{where}: {d.get('status')} (observed {d.get('observed')!r}, expected " \
            f"{d.get('expected')!r})"
    if kind == "cleanup.purged":
        return info, f"rows purged from {d.get('table')}: {d.get('deleted_this_run', d.get('deleted'))} " \
                     f"({d.get('rows_before')} before, {d.get('rows_after')} after)"
    if kind == "cleanup.partition_dropped":
        return info, f"partition dropped: {d.get('partition')} ({d.get('rows')} rows)"
    if kind in ("backup.created", "backup.verified", "backup.verify_failed"):
        return (error if kind.endswith("failed") else info), f"{kind}: {d.get('location') or d.get('error') or ''}"
    if kind in ("window.opened", "window.closed"):
        return info, f"maintenance {kind.replace('.', ' ')}" + (f" after {d.get('duration_s')}s"
                                                                if kind == "window.closed" else "")
    if kind == "approval.requested":
        return warn, f"waiting for approval before {d.get('before')!r} from {' or '.join(d.get('approvers') or [])} " \
                     f"until {d.get('deadline')} (the window has not opened)"
    if kind == "approval.decided":
        return info, f"approval: {d.get('decision')} by {d.get('approver')} via {d.get('via')}: {d.get('comment')}"
    if kind in ("approval.timed_out", "approval.failed", "approval.skipped", "approval.invalid"):
        return warn, f"{kind}: " + ", ".join(f"{k}={v}" for k, v in d.items() if k in
                                             ("reason", "error", "timeout_s", "on_timeout"))
    if kind in ("maintenance.safety_net", "maintenance.lift_failed", "gate.overridden", "window.exceeded"):
        return error, f"{kind}: {d}"
    if kind == "run.finished":
        f = d.get("failure") or {}
        tail = f": {f.get('stage')} / {f.get('step')}: {f.get('error')}" if f else ""
        return (info if d.get("status") in ("succeeded", "skipped") else error), f"run {d.get('status')}{tail}"
    return None


class FlowRunLog:
    """An audit-log listener that writes :func:`line` to the flow run's logger."""

    def __init__(self, logger: Logger):
        self.logger = logger

    def __call__(self, ev: dict[str, Any]) -> None:
        d = ev.get("data") or {}
        if ev.get("kind") in ("run.started", "run.resumed") and d.get("environment") and d.get("runbook"):
            rename(str(d["environment"]), str(d["runbook"]), str(d.get("trigger") or "manual"))
        got = line(ev)
        if got is not None:
            self.logger.log(got[0], "%s", got[1])


def flow_run_log() -> FlowRunLog | None:
    """The flow run's log at INFO, whatever ``PREFECT_LOGGING_LEVEL`` says (the CLI quiets Prefect's own chatter
    to WARNING): a logger of pitstop's own that writes to Prefect's API handler only (not to the console, which
    pitstop's own view serves), with the flow run's identity attached as Prefect's run logger attaches it."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger
    from prefect.logging.handlers import APILogHandler
    from prefect.logging.loggers import PrefectLogAdapter

    try:
        run_logger = get_run_logger()
    except MissingContextError:
        return None
    logger = logging.getLogger("pitstop.flow_run")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not any(isinstance(h, APILogHandler) for h in logger.handlers):
        logger.addHandler(APILogHandler())
    return FlowRunLog(PrefectLogAdapter(logger, extra=dict(getattr(run_logger, "extra", None) or {})))
