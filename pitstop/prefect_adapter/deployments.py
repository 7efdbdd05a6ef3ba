"""Prefect deployments on the API: create or update an environment's (``pitstop deploy``), find and trigger
its emergency deployment (``pitstop emergency``). What the deployments are (specs, ``prefect.yaml``) is
pitstop.deploy's, which never imports Prefect; the CLI calls this module."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.client.orchestration import get_client

from ..config import EnvironmentConfig
from ..deploy import MAINTENANCE_FLOW, PROJECT_ROOT, DeploymentSpec


def ensure_work_pool(name: str) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass


def deploy(source: Path, entrypoint: str, name: str, work_pool: str, *, rrule: str | None, cron: str | None,
           timezone: str | None, parameters: dict[str, Any], description: str, tags: list[str]) -> str:
    """Create or update one deployment of the flow at ``entrypoint``; its id."""
    from prefect.schedules import Cron, RRule

    schedules = []
    if rrule:
        schedules.append(RRule(rrule, timezone=timezone))
    elif cron:
        schedules.append(Cron(cron, timezone=timezone))
    loaded: Flow[..., Any] = Flow.from_source(  # type: ignore[assignment] # sync call: not a coroutine
        source=str(source), entrypoint=entrypoint)
    with contextlib.redirect_stdout(io.StringIO()):  # Prefect prints its own table; ours is --json-safe
        dep_id = loaded.deploy(name=name, work_pool_name=work_pool, build=False, push=False,
                               schedules=schedules, parameters=parameters, description=description,
                               tags=tags, print_next_steps=False, ignore_warnings=True)
    return str(dep_id)


def deployment_exists(name: str) -> bool:
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            return False
    return True


def trigger_deployment(name: str, parameters: dict[str, Any], wait: bool) -> dict[str, Any]:
    """Start a flow run of deployment ``name`` now (``run_deployment``); wait for it when asked."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    flow_run: FlowRun = run_deployment(  # type: ignore[assignment] # sync call: not a coroutine
        name=name, parameters=parameters, timeout=None if wait else 0,
        tags=["pitstop", parameters.get("trigger", "manual")])
    state = flow_run.state
    return {"flow_run_id": str(flow_run.id), "flow_run_name": flow_run.name,
            "state": state.type.value if state else None, "state_name": state.name if state else None,
            "state_message": state.message if state else None,
            "scheduled_start_time": flow_run.expected_start_time.isoformat() if flow_run.expected_start_time
            else None}


def apply(specs: list[DeploymentSpec], work_pool: str) -> list[dict[str, Any]]:
    """Create or update every deployment on the configured Prefect API."""
    ensure_work_pool(work_pool)
    out = []
    for spec in specs:
        dep_id = deploy(PROJECT_ROOT, spec.entrypoint, spec.name, work_pool, rrule=spec.rrule, cron=spec.cron,
                        timezone=spec.timezone, parameters=spec.parameters, description=spec.description,
                        tags=spec.tags)
        out.append({"deployment": spec.full_name, "id": dep_id, "schedule": spec.rrule or spec.cron,
                    "timezone": spec.timezone})
    return out


def find_deployment(cfg: EnvironmentConfig, kind: str = "emergency") -> str | None:
    """Full name of the environment's deployment ``kind`` on the configured API, if any (the CLI asks only
    when ``PREFECT_API_URL`` is set: pitstop.cli_prefect)."""
    name = f"{MAINTENANCE_FLOW}/{cfg.name}-{kind}"
    return name if deployment_exists(name) else None
