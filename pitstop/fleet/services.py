"""``service.restart``: restart services with a health wait, rolling across hosts.

Rolling: at most ``serial`` hosts restart at a time (default 1), whatever the executor's host
concurrency; once a host fails (restart or health wait), hosts that have not started yet are not
touched and fail with "rollout halted". Health: ``systemctl is-active`` for systemd, or a
configured argv polled until it exits with an expected code. ``restart_if`` (an argv) makes the
step idempotent: restart only when it exits 0 (e.g. a config newer than the running process).
``{service}`` in restart/health/restart_if arguments is replaced by the service name.
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ..connectors.base import Connection
from ..context import RunContext
from ..errors import StepFailed
from ..model import StepOutcome
from ..plugin import Plugin, PluginState
from ..registry import STEPS, Placement, Target, has_work, planner, step
from ..work import HasWork
from .hostutil import is_sandbox

ServiceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9@._:-]{1,128}$")]
_lock = threading.Lock()


class RestartParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    services: list[ServiceName] = Field(min_length=1)
    manager: Literal["systemd", "command"] = "systemd"
    restart: list[str] | None = Field(None, min_length=1, description="argv for manager: command")
    health: list[str] | None = Field(None, min_length=1, description="argv polled until healthy")
    health_expect: list[int] = Field(default_factory=lambda: [0])
    health_timeout_s: float = Field(60, gt=0)
    health_interval_s: float = Field(1, gt=0)
    restart_if: list[str] | None = Field(None, min_length=1, description="restart only when this exits 0")
    serial: int = Field(1, ge=1, description="hosts restarted at the same time")
    sudo: bool = False

    @model_validator(mode="after")
    def _command_needs_argv(self) -> RestartParams:
        if self.manager == "command" and not self.restart:
            raise ValueError("manager: command needs `restart` (an argument list)")
        return self


def _fill(argv: list[str], service: str) -> list[str]:
    return [a.replace("{service}", service) for a in argv]


def _restart_argv(p: RestartParams, svc: str) -> list[str]:
    return _fill(p.restart, svc) if p.restart else ["systemctl", "restart", "--", svc]


def _health_argv(p: RestartParams, svc: str) -> list[str]:
    return _fill(p.health, svc) if p.health else ["systemctl", "is-active", "--quiet", "--", svc]


def _needed(conn: Connection, p: RestartParams, svc: str) -> bool:
    if p.restart_if is None:
        return True
    return conn.run(_fill(p.restart_if, svc), check=False, sudo=p.sudo).exit_code == 0


def wait_healthy(conn: Connection, p: RestartParams, svc: str, sleep=time.sleep) -> float:  # type: ignore[no-untyped-def]
    """Poll the health argv until it passes; seconds waited. Raises StepFailed on timeout."""
    t0 = time.monotonic()
    argv = _health_argv(p, svc)
    while True:
        res = conn.run(argv, check=False, sudo=p.sudo, timeout=p.health_timeout_s)
        if res.exit_code in p.health_expect:
            return time.monotonic() - t0
        if time.monotonic() - t0 >= p.health_timeout_s:
            raise StepFailed(f"{conn.name}: {svc} not healthy after {p.health_timeout_s:g}s "
                             f"(health check exit {res.exit_code})")
        sleep(p.health_interval_s)


def _rollout(ctx: RunContext, p: RestartParams) -> tuple[threading.Semaphore, dict[str, str]]:
    with _lock:
        rollouts = ctx.state.of(RolloutState).rollouts
        key = id(p)  # the executor validates params once per step: one rollout per step
        if key not in rollouts:  # keeping ``p`` alive keeps its id unique for the run
            rollouts[key] = (p, threading.Semaphore(p.serial), {})
        return rollouts[key][1], rollouts[key][2]


@step("service.restart", params=RestartParams, placement=Placement.INSIDE, target=Target.HOSTS)
def service_restart(ctx: RunContext, params: RestartParams, host: str) -> StepOutcome:
    """Restart services, one host at a time by default, waiting until each is healthy."""
    conn = ctx.host(host)
    if params.manager == "systemd" and is_sandbox(conn):
        raise StepFailed(f"{host} is a sandbox host: it has no systemd of its own (use manager: command)")
    gate, failed = _rollout(ctx, params)
    with gate:
        if failed:
            raise StepFailed(f"rollout halted after a failure on {', '.join(sorted(failed))}; {host} not touched")
        try:
            return _restart_host(ctx, conn, params, host)
        except Exception as exc:
            failed[host] = str(exc)
            raise


def _restart_host(ctx: RunContext, conn: Connection, p: RestartParams, host: str) -> StepOutcome:
    done, skipped = [], []
    for svc in p.services:
        if not _needed(conn, p, svc):
            skipped.append(svc)
            continue
        conn.run(_restart_argv(p, svc), sudo=p.sudo)
        waited = wait_healthy(conn, p, svc)
        ctx.event("service.restarted", host=host, service=svc, healthy_after_s=round(waited, 3))
        done.append(svc)
    summary = (f"restarted {', '.join(done)}" if done else "nothing to restart") + \
        (f"; not needed: {', '.join(skipped)}" if skipped else "")
    return StepOutcome(changed=bool(done), summary=summary, data={"restarted": done, "not_needed": skipped})


@planner("service.restart")
def plan_restart(ctx: RunContext, params: RestartParams, host: str) -> list[str]:
    conn = ctx.host(host)
    lines = []
    for svc in params.services:
        if _needed(conn, params, svc):
            lines.append(f"restart {svc}, then wait until healthy (≤{params.health_timeout_s:g}s)")
        else:
            lines.append(f"{svc}: restart not needed")
    return lines


STEPS["service.restart"].extra["serial"] = 1  # a hint for fan-out engines: rolling by default


class RolloutState(PluginState):
    # one serial rollout per step of this attempt: id(params) -> (params, semaphore, per-host outcomes)
    rollouts: dict[int, Any] = Field(default_factory=dict)


class ServicesPlugin(Plugin):
    state = RolloutState


PLUGIN = ServicesPlugin("services")


@has_work("service.restart")
def restart_work(ctx: RunContext, params: RestartParams, host: str) -> HasWork:
    conn = ctx.host(host)
    due = [svc for svc in params.services if _needed(conn, params, svc)]
    if due:
        return HasWork.yes(f"restart {', '.join(due)}" + ("" if params.restart_if else " (no restart_if: always)"))
    return HasWork.no("restart_if says no service needs a restart")
