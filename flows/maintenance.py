"""The maintenance flow: one flow run per maintenance run, one Prefect task per stage unit.

Parameters are names and flags only (environment, runbook, trigger, reason): secrets never travel
as flow parameters; the flow loads them from the environment where it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import Any, TypeVar

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pitstop import runner
from pitstop.console import ConsoleView

T = TypeVar("T")


def prefect_unit(name: str, fn: Callable[[], T]) -> T:
    """Run one stage unit as a Prefect task (never one task per command: tasks cost 10-90 ms)."""
    return task(fn, name=name, cache_policy=NO_CACHE, persist_result=False, retries=0)()


def _flow_run_id(env: str, runbook: str) -> str | None:
    from pathlib import Path

    from prefect.runtime import flow_run

    fid = flow_run.id
    start = flow_run.scheduled_start_time
    if not fid or start is None:
        return None
    if start.tzinfo is not None:
        start = start.astimezone(UTC)
    stamp = start.strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{Path(env).stem}-{Path(runbook).stem}-{str(fid)[:8]}"


@flow(name="pitstop-maintenance", persist_result=False, log_prints=False, validate_parameters=True)
def maintenance(env: str, runbook: str, trigger: str = "manual", reason: str = "",
                accept_unverified_backup: bool = False, run_id: str | None = None, wait_s: float = 0.0,
                console: bool = False) -> dict[str, Any]:
    """Run ``runbook`` on environment ``env``; ``console`` prints live progress to this process.

    Without a ``run_id`` the id derives from the Prefect flow run, so when Prefect retries or
    reschedules this flow run after a crash, the retry finds the run folder and *resumes* it.
    """
    listener = ConsoleView() if console else None
    run_id = run_id or _flow_run_id(env, runbook)
    result = runner.execute(env, runbook, trigger=trigger, reason=reason,
                            accept_unverified_backup=accept_unverified_backup, run_id=run_id,
                            unit_runner=prefect_unit, listener=listener, wait_s=wait_s)
    return {"run_id": result.run_id, "status": result.status.value, "run_dir": str(result.run_dir)}
