"""Prefect deployments for an environment, built from its config: one per schedule (monthly,
quarterly, ...), ``notices`` (hourly) and ``emergency`` (no schedule).

Schedules are the environment's own (RRULE with a local start time, or cron) in its timezone, so
Prefect's scheduler handles DST. Flow parameters carry names only — the environment reference and
the runbook — never a secret. Workers run the flows from this project directory (a process work
pool); pitstop never grows its own scheduler or queue.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from .config import EnvironmentConfig, ScheduleSpec

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MAINTENANCE_ENTRYPOINT = "flows/maintenance.py:maintenance"
NOTICES_ENTRYPOINT = "flows/notices.py:notices"
MAINTENANCE_FLOW = "pitstop-maintenance"
NOTICES_CRON = "0 * * * *"


class DeploymentSpec(BaseModel):
    name: str
    flow: str
    entrypoint: str
    parameters: dict[str, Any]
    rrule: str | None = None
    cron: str | None = None
    timezone: str | None = None
    description: str = ""
    tags: list[str] = Field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.flow}/{self.name}"


def env_ref(cfg: EnvironmentConfig) -> str:
    """How a worker finds this environment: its name if it is ``config/<name>.yaml``, else the path."""
    src = Path(cfg.source).resolve()
    if src == (PROJECT_ROOT / "config" / f"{cfg.name}.yaml").resolve():
        return cfg.name
    return str(src)


def rrule_text(spec: ScheduleSpec) -> str:
    hh, mm = spec.at_time
    since = (spec.since.strftime("%Y%m%d") if spec.since else "20000101")
    return f"DTSTART:{since}T{hh:02d}{mm:02d}00\nRRULE:{spec.rrule_body}"


def deployment_specs(cfg: EnvironmentConfig) -> list[DeploymentSpec]:
    ref = env_ref(cfg)
    tags = ["pitstop", f"env:{cfg.name}"]
    specs = []
    for name, spec in cfg.schedules.windows().items():
        if not spec.enabled:
            continue
        runbook = spec.runbook or name
        specs.append(DeploymentSpec(
            name=f"{cfg.name}-{name}", flow=MAINTENANCE_FLOW, entrypoint=MAINTENANCE_ENTRYPOINT,
            parameters={"env": ref, "runbook": runbook, "trigger": "scheduled"},
            rrule=rrule_text(spec) if spec.rrule else None, cron=spec.cron, timezone=spec.timezone or cfg.timezone,
            description=f"{runbook} maintenance of {cfg.name} on schedule {name!r}", tags=[*tags, f"schedule:{name}"]))
    specs.append(DeploymentSpec(
        name=f"{cfg.name}-emergency", flow=MAINTENANCE_FLOW, entrypoint=MAINTENANCE_ENTRYPOINT,
        parameters={"env": ref, "runbook": "monthly", "trigger": "emergency"},
        description=f"emergency maintenance of {cfg.name} (triggered by `pitstop emergency`)",
        tags=[*tags, "emergency"]))
    specs.append(DeploymentSpec(
        name=f"{cfg.name}-notices", flow="pitstop-notices", entrypoint=NOTICES_ENTRYPOINT,
        parameters={"env": ref}, cron=NOTICES_CRON, timezone=cfg.timezone,
        description=f"advance notices of {cfg.name}'s maintenance windows", tags=[*tags, "notices"]))
    return specs


def ensure_work_pool(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass


def apply(specs: list[DeploymentSpec], work_pool: str) -> list[dict[str, Any]]:
    """Create or update every deployment on the configured Prefect API."""
    from prefect import Flow
    from prefect.schedules import Cron, RRule

    ensure_work_pool(work_pool)
    out = []
    for spec in specs:
        schedules = []
        if spec.rrule:
            schedules.append(RRule(spec.rrule, timezone=spec.timezone))
        elif spec.cron:
            schedules.append(Cron(spec.cron, timezone=spec.timezone))
        flow = Flow.from_source(source=str(PROJECT_ROOT), entrypoint=spec.entrypoint)
        with contextlib.redirect_stdout(io.StringIO()):  # Prefect prints its own table; ours is --json-safe
            dep_id = flow.deploy(name=spec.name, work_pool_name=work_pool, build=False, push=False,
                                 schedules=schedules, parameters=spec.parameters, description=spec.description,
                                 tags=spec.tags, print_next_steps=False, ignore_warnings=True)
        out.append({"deployment": spec.full_name, "id": str(dep_id), "schedule": spec.rrule or spec.cron,
                    "timezone": spec.timezone})
    return out


def find_deployment(cfg: EnvironmentConfig, kind: str = "emergency") -> str | None:
    """Full name of the environment's deployment ``kind`` on the configured API, if any."""
    import os

    if not os.environ.get("PREFECT_API_URL"):
        return None
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    name = f"{MAINTENANCE_FLOW}/{cfg.name}-{kind}"
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None
    return name


def trigger_deployment(name: str, parameters: dict[str, Any], wait: bool) -> dict[str, Any]:
    """Start a flow run of deployment ``name`` now (``run_deployment``); wait for it when asked."""
    from prefect.deployments import run_deployment

    flow_run = run_deployment(name=name, parameters=parameters, timeout=None if wait else 0,
                              tags=["pitstop", parameters.get("trigger", "manual")])
    state = flow_run.state
    return {"flow_run_id": str(flow_run.id), "flow_run_name": flow_run.name,
            "state": state.type.value if state else None,
            "scheduled_start_time": flow_run.expected_start_time.isoformat() if flow_run.expected_start_time
            else None}
