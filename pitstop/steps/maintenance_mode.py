"""Maintenance mode: a flag file on each web host that the web server checks (serves a 503 page).

The flag carries its own expiry (``expires_at``: window plus margin) so a host-side watcher or the
web server config can ignore a stale flag if pitstop dies; a normal run removes it on ``off``.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from ..context import RunContext
from ..model import StepOutcome
from ..registry import Placement, Target, planner, step

_lock = threading.RLock()


class OnParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str | None = None


class OffParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _group(cfg) -> str:  # type: ignore[no-untyped-def]
    return cfg.maintenance.targets


def _hosts_on(ctx: RunContext) -> set[str]:
    with _lock:
        on: set[str] = ctx.state.setdefault("maintenance_on", set())
        return on


@step("maintenance.on", params=OnParams, placement=Placement.INSIDE, target=Target.HOSTS, default_group=_group)
def maintenance_on(ctx: RunContext, params: OnParams, host: str) -> StepOutcome:
    """Switch maintenance mode on: write the flag file atomically."""
    m = ctx.cfg.maintenance
    expected = ctx.runbook.expected_downtime or ctx.cfg.window.expected_downtime
    now = datetime.now(UTC)
    flag = {"run_id": ctx.run_id, "since": now.isoformat(timespec="seconds"),
            "expires_at": (now + expected + m.ttl_margin).isoformat(timespec="seconds"),
            "message": params.message or m.message}
    conn = ctx.host(host)
    existed = conn.exists(m.flag_path)
    conn.put(m.flag_path, (json.dumps(flag) + "\n").encode())
    with _lock:
        _hosts_on(ctx).add(host)
    ctx.event("maintenance.on", host=host, flag=m.flag_path, expires_at=flag["expires_at"])
    return StepOutcome(changed=not existed, summary=f"flag {m.flag_path} set until {flag['expires_at']}")


@step("maintenance.off", params=OffParams, placement=Placement.INSIDE, target=Target.HOSTS, default_group=_group)
def maintenance_off_host(ctx: RunContext, params: OffParams, host: str) -> StepOutcome:
    """Switch maintenance mode off: remove the flag file."""
    path = ctx.cfg.maintenance.flag_path
    removed = ctx.host(host).remove(path)
    with _lock:
        _hosts_on(ctx).discard(host)
    ctx.event("maintenance.off", host=host, flag=path)
    return StepOutcome(changed=removed, summary="flag removed" if removed else "flag was not set")


def maintenance_off(ctx: RunContext, params: OffParams) -> None:
    """Lift maintenance on every host where this run turned it on (the always-finally safety net)."""
    errors = []
    for host in sorted(_hosts_on(ctx)):
        try:
            maintenance_off_host(ctx, params, host)
        except Exception as exc:  # noqa: BLE001 - try every host, then report
            errors.append(f"{host}: {exc}")
    if errors:
        raise RuntimeError("; ".join(errors))


@planner("maintenance.on")
def plan_on(ctx: RunContext, params: OnParams, host: str) -> list[str]:
    path = ctx.cfg.maintenance.flag_path
    return [f"create {path}" + (" (already present!)" if ctx.host(host).exists(path) else "")]


@planner("maintenance.off")
def plan_off(ctx: RunContext, params: OffParams, host: str) -> list[str]:
    return [f"remove {ctx.cfg.maintenance.flag_path}"]
