"""The maintenance flow: one flow run per maintenance run, one Prefect task per stage unit.

Parameters are names and flags only (environment, runbook, trigger, reason): secrets never travel
as flow parameters; the flow loads them from the environment where it runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pitstop import runner
from pitstop.console import ConsoleView
from pitstop.errors import RunLocked

from .common import announce_files, deployment_defaults, refused
from .progress import flow_run_log, flow_run_name

T = TypeVar("T")


def prefect_unit(name: str, fn: Callable[[], T]) -> T:
    """Run one stage unit as a Prefect task (never one task per command: tasks cost 10-90 ms)."""
    wrapped = task(name=name, cache_policy=NO_CACHE, persist_result=False, retries=0)(fn)
    return wrapped()


def _flow_run_id(env: str, runbook: str) -> str | None:
    from prefect.runtime import flow_run

    fid, start = flow_run.id, flow_run.scheduled_start_time
    if not fid or start is None:
        return None
    return runner.run_id_for_flow_run(env, runbook, str(fid), start)


@flow(name="pitstop-maintenance", persist_result=False, log_prints=False, validate_parameters=True,
      flow_run_name=flow_run_name)
def maintenance(env: str, runbook: str, trigger: str = "manual", reason: str = "",
                accept_unverified_backup: bool = False, run_id: str | None = None, wait_s: float = 0.0,
                override_blackout: bool = False, expected_downtime: str | None = None, rehearsal: bool = False,
                console: bool = False) -> dict[str, Any]:
    """Run ``runbook`` on environment ``env``; ``console`` prints live progress to this process.

    Another run holding the environment's lock: a deployment's flow run (worker) ends ``Cancelled`` named
    ``Refused`` (see :func:`flows.common.refused`), not ``Failed`` or ``Crashed``; called in-process (the
    CLI) it raises :class:`RunLocked` (exit code 3).

    Without a ``run_id`` the id derives from the Prefect flow run, so when Prefect retries or
    reschedules this flow run after a crash, the retry finds the run folder and *resumes* it.
    """
    from pitstop.fsmodes import private_umask
    from pitstop.input_guards import flow_parameters

    # the same guards as the CLI, before anything is read or written: a Prefect UI or API user is not
    # trusted with paths, run ids or overrides without a reason
    deployed = deployment_defaults()
    files = flow_parameters(env=env, runbook=runbook, run_id=run_id, reason=reason,
                            accept_unverified_backup=accept_unverified_backup,
                            deployment_parameters=deployed, trigger=trigger,
                            override_blackout=override_blackout, expected_downtime=expected_downtime, wait_s=wait_s)
    announce_files(files.env, files.runbook)
    from pitstop.approval_prefect import prefect_waiter

    # progress to this process's console (pitstop run) and, always, to the flow run's log (the Prefect UI)
    listeners: list[runner.Listener] = [x for x in (ConsoleView() if console else None, flow_run_log()) if x]
    run_id = run_id or _flow_run_id(env, runbook)
    try:
        with private_umask():
            result = runner.execute(files.env, files.runbook, trigger=trigger, reason=reason,
                                    accept_unverified_backup=accept_unverified_backup, run_id=run_id,
                                    unit_runner=prefect_unit, listener=listeners, wait_s=wait_s,
                                    approval_waiter=prefect_waiter(),
                                    override_blackout=override_blackout, expected_downtime=expected_downtime,
                                    rehearsal=rehearsal)
    except RunLocked as exc:  # another run holds the environment: nothing of this run exists, nothing was sent
        if deployed is None:  # called in-process (`pitstop run --engine prefect`): the CLI says it, exit 3
            raise
        return refused(exc)  # a Prefect State: the flow run's final state (in-process callers never get it)
    return {"run_id": result.run_id, "status": result.status.value, "run_dir": str(result.run_dir)}


def _plain_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """The flow run's parameters as stored by the API: they are JSON scalars already (names, flags, a number),
    validated by the flow's signature. Prefect's default serializer imports FastAPI for its
    ``jsonable_encoder`` (about a second of a command's start-up on this machine) to do the same."""
    return {k: v if v is None or isinstance(v, str | bool | int | float) else str(v) for k, v in parameters.items()}


maintenance.serialize_parameters = _plain_parameters  # type: ignore[method-assign]


def run_in_process(local_server: bool, **parameters: Any) -> dict[str, Any]:
    """The CLI's flow run in this process. Prefect's console log shows an error's message without its
    traceback (the flow run's log on the API keeps it; ``PITSTOP_DEBUG=1`` shows it here too): a run refused
    because the environment is busy printed thirty lines of Prefect's engine before pitstop's own one.

    Against the state directory's local API server (``local_server``), without flow-run heartbeats: they let
    a server's automations mark a dead run Crashed, which the local server does not run, and stopping their
    thread costs up to a second at the end of every run."""
    with contextlib.ExitStack() as stack:
        if os.environ.get("PITSTOP_DEBUG") != "1":
            stack.enter_context(_console_without_tracebacks())
        if local_server:
            from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

            stack.enter_context(temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))
        return maintenance(**parameters)


class _NoTraceback(logging.Formatter):
    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:  # the record goes on to the API handler as it came
            record.exc_info, record.exc_text, record.stack_info = saved


@contextlib.contextmanager
def _console_without_tracebacks() -> Iterator[None]:
    handlers = [h for h in logging.getLogger().handlers if type(h).__name__ == "PrefectConsoleHandler"]
    saved = [h.formatter for h in handlers]
    for h in handlers:
        h.setFormatter(_NoTraceback(h.formatter))
    try:
        yield
    finally:
        for h, f in zip(handlers, saved, strict=True):
            h.setFormatter(f)
