"""Maintenance mode steps: ``maintenance.on`` / ``maintenance.off`` on every target host, through
the configured strategy (pitstop/maintenance: flag_file, command, http), plus the dead-man's switch.

When maintenance goes on, each host also gets an expiry (TTL = window + margin, or
``maintenance.deadman.ttl``): a detached watcher on the host lifts maintenance by itself if pitstop
dies. ``maintenance.off`` cancels it. :func:`maintenance_off` is the executor's always-finally
safety net: it lifts maintenance on every host this run turned it on.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from ..context import RunContext
from ..model import StepOutcome
from ..plugin import Notify, Plugin, WindowStatus
from ..registry import Placement, Target, planner, step
from . import checks as _checks  # noqa: F401 - registers check.maintenance_off and check.maintenance_state
from . import deadman, strategy_for
from .base import MaintenanceRecord
from .state import MaintenanceState

_lock = threading.RLock()


class OnParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str | None = Field(None, max_length=2000)


class OffParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _group(cfg) -> str:  # type: ignore[no-untyped-def]
    return cfg.maintenance.targets


def _state(ctx: RunContext) -> MaintenanceState:
    return ctx.state.of(MaintenanceState)


def _hosts_on(ctx: RunContext) -> set[str]:
    return _state(ctx).on


def ttl(ctx: RunContext) -> timedelta:
    """How long a host stays in maintenance if pitstop never comes back: window + margin."""
    m = ctx.cfg.maintenance
    return m.deadman.ttl or (ctx.runbook.expected_downtime or ctx.cfg.window.expected_downtime) + m.ttl_margin


def _record(ctx: RunContext, message: str | None) -> MaintenanceRecord:
    with _lock:
        st = _state(ctx)
        if st.record is None:  # one record per run: every host shows the same run, start and expiry
            st.record = MaintenanceRecord.new(ctx.run_id, ttl(ctx), message or ctx.cfg.maintenance.message)
        return st.record


@step("maintenance.on", params=OnParams, placement=Placement.INSIDE, target=Target.HOSTS, default_group=_group)
def maintenance_on(ctx: RunContext, params: OnParams, host: str) -> StepOutcome:
    """Switch maintenance mode on (configured strategy) and arm the dead-man's switch."""
    m = ctx.cfg.maintenance
    strategy = strategy_for(m)
    record = _record(ctx, params.message)
    with _lock:
        _hosts_on(ctx).add(host)  # before acting: a half-done `on` is still lifted by the safety net
    armed = None
    target = strategy.deadman_target(ctx, host) if m.deadman.enabled else None
    if target is not None:  # armed *before* the switch: there is no moment with maintenance on and no expiry
        conn = ctx.host(host)
        with _lock:
            old = _state(ctx).deadman.pop(host, None)
        if old is not None:
            deadman.cancel(conn, old, ctx.run_id, sudo=m.sudo)
        armed = deadman.arm(conn, target, ttl_s=record.ttl_seconds, run_id=ctx.run_id, method=m.deadman.method,
                            sudo=m.sudo, token=record.token)
        with _lock:
            _state(ctx).deadman[host] = armed
        ctx.event("maintenance.deadman_armed", host=host, expires_at=record.expires_at, deadman=armed.describe(),
                  handle=armed.model_dump())  # a resumed run cancels it through this record
    changed = strategy.on(ctx, host, record)
    ctx.event("maintenance.on", host=host, strategy=strategy.name, expires_at=record.expires_at,
              deadman=armed.describe() if armed else None)
    return StepOutcome(changed=changed, summary=f"{strategy.name} on until {record.expires_at}"
                       + (f" (dead-man {armed.method})" if armed else ""),
                       data={"strategy": strategy.name, "expires_at": record.expires_at,
                             "deadman": armed.model_dump() if armed else None})


@step("maintenance.off", params=OffParams, placement=Placement.INSIDE, target=Target.HOSTS, default_group=_group)
def maintenance_off_host(ctx: RunContext, params: OffParams, host: str) -> StepOutcome:
    """Switch maintenance mode off (configured strategy) and cancel the dead-man's switch."""
    m = ctx.cfg.maintenance
    strategy = strategy_for(m)
    changed = strategy.off(ctx, host)
    with _lock:
        _hosts_on(ctx).discard(host)
        handle = _state(ctx).deadman.pop(host, None)
    cancelled = False
    if handle is not None:
        try:
            cancelled = deadman.cancel(ctx.host(host), handle, ctx.run_id, sudo=m.sudo)
        except Exception as exc:  # noqa: BLE001 - a stray watcher is harmless: the marker is gone
            ctx.event("maintenance.deadman_cancel_failed", host=host, error=ctx.redact(str(exc)))
    ctx.event("maintenance.off", host=host, strategy=strategy.name, deadman_cancelled=cancelled)
    return StepOutcome(changed=changed, summary=f"{strategy.name} off" if changed else "maintenance was not on")


def renew_deadman(ctx: RunContext) -> list[str]:
    """Keep a long window from outliving its dead-man while the run is alive: re-arm every host's
    watcher for a full TTL from now (never past ``deadman.max_hold`` after maintenance went on,
    default 3 x the TTL), then rewrite the host's marker with the new expiry, then cancel the old
    watcher (which, armed for the old expiry, would find its token gone anyway). Hosts renewed."""
    m = ctx.cfg.maintenance
    with _lock:
        rec = _state(ctx).record
        handles = dict(_state(ctx).deadman)
        hosts = sorted(_hosts_on(ctx))
    if rec is None or not hosts or not (m.deadman.enabled and m.deadman.renew):
        return []
    now = datetime.now(UTC).replace(microsecond=0)
    full = ttl(ctx)
    cap = datetime.fromisoformat(rec.since) + (m.deadman.max_hold or 3 * full)
    expires = min(now + full, cap)
    if expires <= datetime.fromisoformat(rec.expires_at):
        return []  # the cap is reached: the watchers armed now stay as they are
    new = rec.model_copy(update={"expires_at": expires.isoformat(),
                                 "ttl_seconds": max(1, int((expires - now).total_seconds()))})
    strategy = strategy_for(m)
    renewed = []
    for host in hosts:
        try:
            old = handles.get(host)
            target = strategy.deadman_target(ctx, host)
            if target is not None and old is None:
                continue  # its first watcher is being armed right now (maintenance.on is still running)
            conn = ctx.host(host)
            armed = None
            if target is not None:
                armed = deadman.arm(conn, target, ttl_s=new.ttl_seconds, run_id=ctx.run_id, method=m.deadman.method,
                                    sudo=m.sudo, token=new.token)
            strategy.renew(ctx, host, new)
            if old is not None and armed is not None and old.method == "setsid":
                deadman.cancel(conn, old, ctx.run_id, sudo=m.sudo)  # a systemd timer was replaced by arm()
            with _lock:
                if armed is not None:
                    _state(ctx).deadman[host] = armed
            ctx.event("maintenance.deadman_armed", host=host, expires_at=new.expires_at, renewed=True,
                      deadman=armed.describe() if armed else None, handle=armed.model_dump() if armed else None)
            renewed.append(host)
        except Exception as exc:  # noqa: BLE001 - the old watcher still lifts at the old expiry
            ctx.event("maintenance.deadman_renew_failed", host=host, error=ctx.redact(str(exc)),
                      expires_at=rec.expires_at)
    with _lock:
        _state(ctx).record = new
    return renewed


class DeadmanKeeper:
    """While the window's work runs, renews the dead-man (:func:`renew_deadman`) whenever half its
    TTL is used up, from a thread of its own, so one step longer than the TTL is covered too. It
    dies with the run: a dead run stops renewing and its hosts lift maintenance on time."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pitstop-deadman-keeper", daemon=True)

    def __enter__(self) -> DeadmanKeeper:
        m = self.ctx.cfg.maintenance
        if m.deadman.enabled and m.deadman.renew:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        half = ttl(self.ctx).total_seconds() / 2
        while not self._stop.wait(min(30.0, max(0.5, half / 4))):
            rec = _state(self.ctx).record
            if rec is None:
                continue
            left = (datetime.fromisoformat(rec.expires_at) - datetime.now(UTC)).total_seconds()
            if left <= half:
                try:
                    renew_deadman(self.ctx)
                except Exception as exc:  # noqa: BLE001 - never take the run down; the watchers still lift
                    self.ctx.event("maintenance.deadman_renew_failed", error=self.ctx.redact(str(exc)))


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
    m = ctx.cfg.maintenance
    lines = strategy_for(m).describe(ctx, host, True)
    if m.deadman.enabled and m.strategy != "http":
        lines.append(f"arm dead-man's switch: lifts by itself after {int(ttl(ctx).total_seconds())}s")
    return lines


@planner("maintenance.off")
def plan_off(ctx: RunContext, params: OffParams, host: str) -> list[str]:
    return strategy_for(ctx.cfg.maintenance).describe(ctx, host, False) + ["cancel the dead-man's switch"]


class MaintenanceModePlugin(Plugin):
    """Maintenance mode's hooks: the dead-man keeper around the window, the window's status for a resumed
    run, and the always-finally safety net that lifts maintenance mode wherever this run left it on."""

    state = MaintenanceState

    def window_guard(self, ctx: RunContext) -> DeadmanKeeper:
        return DeadmanKeeper(ctx)  # a long window must not outlive its dead-man while the run is alive

    def window_status(self, ctx: RunContext) -> WindowStatus:
        st = _state(ctx)
        return WindowStatus(held=bool(st.on), down_since=st.down_since, lifted_at=st.lifted_at)

    def safety_net(self, ctx: RunContext, notify: Notify) -> bool:
        """If any host still has maintenance on (its off step failed or never ran), lift it."""
        if not _hosts_on(ctx):
            return False
        ctx.event("maintenance.safety_net", hosts=sorted(_hosts_on(ctx)))
        try:
            maintenance_off(ctx, OffParams())
            return True
        except Exception as exc:  # noqa: BLE001 - report, alert, continue to the report
            ctx.event("maintenance.lift_failed", error=ctx.redact(str(exc)))
            notify("maintenance.stuck", "maintenance mode could NOT be lifted — act now",
                   ctx.redact(str(exc)) + f"\n\nSee and lift it: pitstop maintenance status --env "
                   f"{ctx.cfg.name}; pitstop maintenance off --env {ctx.cfg.name} --reason '...'", severity="failure")
            return False


PLUGIN = MaintenanceModePlugin("maintenance_mode")
