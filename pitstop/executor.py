"""Runs a planned runbook. Owns the always-finally path: whatever fails, maintenance mode is lifted,
a failure notification goes out and the report is written.

Work is grouped into *units* (consecutive steps of one stage in one phase). Each unit is handed to a
``unit_runner`` so the Prefect flow can make it one task; the engine itself does not import Prefect.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime
from itertools import groupby
from typing import Any, TypeVar

from . import need
from .approval import ApprovalGate
from .audit import now_iso
from .context import RunContext, provenance
from .errors import CheckFailed, GateRefused, PitstopError
from .model import HostResult, Status, StepOutcome
from .plan import Phase, Plan, PlannedStep, build_plan, params_of, spec_for
from .registry import Target, get_step, plugins
from .resume import down_since, window_done_earlier
from .runbook import Stage
from .window import policy_for
from .work import Decision

T = TypeVar("T")
UnitRunner = Callable[[str, Callable[[], T]], T]

def direct(name: str, fn: Callable[[], T]) -> T:
    return fn()


class Executor:
    def __init__(self, ctx: RunContext, unit_runner: UnitRunner = direct,
                 completed: dict[str, dict[str, Any]] | None = None):
        self.ctx = ctx
        self.unit_runner = unit_runner
        self.plan: Plan = build_plan(ctx.cfg, ctx.runbook)
        first = ctx.state.earlier.started_at if ctx.state.earlier else None  # resumed: the window policy (a
        # schedule's cutoff) of the run's start
        self.window = policy_for(ctx.cfg, ctx.runbook, ctx.options.trigger.value,
                                 now=datetime.fromisoformat(first) if first else None)
        self.skip_reason: str | None = None  # set for a scheduled run that falls into a blackout
        self.resuming = completed is not None
        self.completed = completed or {}  # steps done by an earlier attempt of this run (resume)
        self.status = Status.SUCCEEDED
        self.failure: dict[str, Any] | None = None
        self._fail_lock = threading.Lock()
        self._running: dict[str, PlannedStep] = {}  # started, not finished (an interruption names them)
        self.decision: Decision | None = None  # window and backup needed? (pitstop/need.py)
        self.gate = ApprovalGate(ctx, self.plan)  # the runner may give it a waiter (a Prefect pause)

    # -- public ---------------------------------------------------------------------------------------
    def run(self) -> Status:
        ctx = self.ctx
        rb = ctx.runbook
        ctx.event("run.resumed" if self.resuming else "run.started", run_id=ctx.run_id, environment=ctx.cfg.name,
                  runbook=rb.name, runbook_source=rb.source, completed=sorted(self.completed),
                  trigger=ctx.options.trigger.value, reason=ctx.options.reason, dry_run=ctx.options.dry_run,
                  accept_unverified_backup=ctx.options.accept_unverified_backup,
                  options=ctx.options.to_record(), provenance=provenance(ctx.cfg, rb, ctx.flow_run),
                  plan=[s.model_dump(mode="json") for s in self.plan.steps], window=self.window.describe(),
                  expected_downtime_s=(ctx.options.expected_downtime if ctx.options.expected_downtime is not None
                                       else rb.announced_downtime(ctx.cfg.window.expected_downtime)).total_seconds())
        if not self.skip_reason:
            self.decision = need.start(ctx, self.plan, self.resuming)
        if self.resuming:
            self._notify("run.resumed", f"{rb.name} maintenance resumed ({len(self.completed)} steps already done)",
                         self._start_body())
        else:
            self._notify("run.started", f"{rb.name} maintenance started", self._start_body())
        if ctx.options.override_blackout:
            ctx.event("blackout.overridden", reason=ctx.options.reason)
        self._database_transport()
        try:
            if self.skip_reason:
                self.status = Status.SKIPPED
                ctx.event("run.skipped", reason=self.skip_reason)
                self._notify("run.skipped", f"{rb.name} maintenance skipped: {self.skip_reason}", severity="warning")
                self._skip(self.plan.steps, f"run skipped: {self.skip_reason}")
                return self.status
            if self._run_phase(Phase.BEFORE):
                self._run_window()
            if self.status == Status.SUCCEEDED:
                self._run_phase(Phase.AFTER)
            else:
                self._skip(self.plan.phase(Phase.AFTER), "not approved" if self.status == Status.NOT_APPROVED
                           else "run failed before verification")
        except BaseException as exc:  # noqa: BLE001 - e.g. KeyboardInterrupt: still lift maintenance
            self._interrupted(exc)
            self._lift_maintenance()
            raise
        finally:
            self._finish()
        return self.status

    # -- phases ---------------------------------------------------------------------------------------
    def _units(self, steps: list[PlannedStep]) -> list[tuple[Stage, list[PlannedStep]]]:
        return [(stage, list(group)) for stage, group in groupby(steps, key=lambda s: s.stage)]

    def _run_phase(self, phase: Phase) -> bool:
        """Run every unit of ``phase``; stop at the first failure. True if all succeeded."""
        steps = self.plan.phase(phase)
        for stage, unit in self._units(steps):
            if not self._approved(steps[steps.index(unit[0]):]):
                return False
            if not self._run_unit(phase, stage, unit):
                remaining = steps[steps.index(unit[-1]) + 1:]
                self._skip(remaining, "an earlier step failed")
                return False
        return True

    def _run_window(self) -> None:
        window = self.plan.phase(Phase.WINDOW)
        off = [s for s in window if s.stage == Stage.MAINTENANCE_OFF]
        work = [s for s in window if s.stage != Stage.MAINTENANCE_OFF]
        if window and self.resuming and window_done_earlier(self.ctx, window, self.completed):
            return  # an earlier attempt did the whole window and lifted maintenance: not reopened
        if window and self.decision is not None and need.no_window(self.ctx, self.plan, self.decision, self._skip):
            return  # no exclusive step has work: maintenance mode is never switched on
        if window and not self._approved(window):
            return  # not approved: the window never opens
        if window:
            self._open_window()
        ok = True
        with ExitStack() as guards:  # the plug-ins' window guards (the dead-man keeper of maintenance mode)
            for plugin in plugins():
                guard = plugin.window_guard(self.ctx)
                if guard is not None:
                    guards.enter_context(guard)
            for stage, unit in self._units(work):
                if not self._admit(stage, unit, work):
                    ok = False
                    break
                if not self._run_unit(Phase.WINDOW, stage, unit):
                    self._skip(work[work.index(unit[-1]) + 1:], "an earlier step failed")
                    ok = False
                    break
        # Always-finally: maintenance off runs whatever happened inside the window.
        if off:
            self._run_unit(Phase.WINDOW, Stage.MAINTENANCE_OFF, off)
        self._lift_maintenance()
        if window:
            assert self.ctx.state.window_started is not None
            started, attempt_started = self.ctx.state.window_started
            self.ctx.state.window_started = None
            now = time.time()
            self.ctx.event("window.closed", ended_at=now_iso(), duration_s=round(now - started, 3), ok=ok,
                           attempt_duration_s=round(now - attempt_started, 3))

    def _approved(self, steps: list[PlannedStep]) -> bool:
        """The approval hook (pitstop/approval.py) before ``steps[0]``; False: the run ends not-approved."""
        refusal = self.gate.admit(steps[0])
        if refusal is not None:
            self.status, self.failure = Status.NOT_APPROVED, refusal
            self._skip(steps, f"not approved: {refusal['error']}")
        return refusal is None

    def _open_window(self) -> None:
        """``window.opened``; resumed while the site still shows the maintenance page, timed from then."""
        since = down_since(self.ctx) if self.resuming else None
        now = time.time()
        self.ctx.state.window_started = (datetime.fromisoformat(since).timestamp() if since else now, now)
        self.ctx.event("window.opened", started_at=now_iso(), **({"down_since": since} if since else {}))

    def _admit(self, stage: Stage, unit: list[PlannedStep], work: list[PlannedStep]) -> bool:
        """Window-aware admission: do not start work that would not end before the cutoff."""
        estimates = [spec_for(self.ctx.runbook, p).estimate for p in unit]
        why = self.window.admit(stage.value, [e.total_seconds() for e in estimates if e is not None])
        if why is None:
            return True
        self.ctx.event("window.exceeded", stage=stage.value, reason=why)
        self._notify("window.exceeded", f"window exceeded: {stage.value} not started", why, severity="failure")
        self._fail(unit[0], PitstopError(f"window exceeded: {why}"))
        self._skip(work[work.index(unit[0]):], "window exceeded")
        return False

    def _lift_maintenance(self) -> None:
        """Safety net: the plug-ins undo what must not outlive the run (maintenance mode left on because its off
        step failed or never ran); each records and announces its own failure."""
        lifted = False
        for plugin in plugins():
            lifted = plugin.safety_net(self.ctx, self._notify) or lifted
        if lifted:
            self._off_done_by_safety_net()

    def _off_done_by_safety_net(self) -> None:
        """Maintenance-off steps the run never reached (it was interrupted in the window) did happen, through
        the safety net: recorded so, not as "not reached" beside hosts that say off."""
        finished = {e["data"].get("key") for e in self.ctx.audit.events if e["kind"] == "step.finished"}
        for p in self.plan.steps:
            key = p.spec_key()
            if p.stage == Stage.MAINTENANCE_OFF and key not in finished and key not in self.completed:
                self.ctx.event("step.finished", stage=p.stage.value, step=p.label, uses=p.uses, key=key,
                               status=Status.SUCCEEDED.value, changed=True, duration_s=0.0, hosts=[],
                               summary="maintenance lifted by the always-finally safety net")

    # -- units and steps ------------------------------------------------------------------------------
    def _run_unit(self, phase: Phase, stage: Stage, unit: list[PlannedStep]) -> bool:
        ctx = self.ctx

        def body() -> bool:
            ctx.event("stage.started", stage=stage.value, phase=phase.value, steps=[s.label for s in unit])
            t0 = time.monotonic()
            if phase == Phase.WINDOW or stage == Stage.POST_VERIFICATION:
                ok = self._run_graph(stage, unit)
            else:
                ok = self._run_in_order(stage, unit)
            status = Status.SUCCEEDED if ok else Status.FAILED
            ctx.event("stage.finished", stage=stage.value, phase=phase.value, status=status.value,
                      duration_s=round(time.monotonic() - t0, 3))
            if ok:
                self._notify("stage.completed", f"stage {stage.value} completed", severity="info", stage=stage.value,
                             phase=phase.value)
            else:
                self._notify("stage.failed", f"stage {stage.value} FAILED", str(self.failure and
                             self.failure.get("error")), severity="failure", stage=stage.value, phase=phase.value)
            return ok

        return self.unit_runner(f"{stage.value}-{phase.value}", body)

    def _run_in_order(self, stage: Stage, unit: list[PlannedStep]) -> bool:
        ok = True
        for i, planned in enumerate(unit):
            if not self._run_step(planned):
                ok = False
                if stage == Stage.POST_VERIFICATION:
                    continue  # verify everything: the report must list every difference
                self._skip(unit[i + 1:], "an earlier step failed")
                break
        return ok

    def _run_graph(self, stage: Stage, unit: list[PlannedStep]) -> bool:
        """In-window work and read-only verification: independent steps overlap (pitstop/dag.py)."""
        from .dag import run_graph

        res = run_graph(unit, self._run_step, keep_going=stage == Stage.POST_VERIFICATION)
        self._skip(res.not_started, "an earlier step failed")
        return res.ok and not res.not_started

    def _run_step(self, planned: PlannedStep) -> bool:
        with self.ctx.step_scope(planned.stage.value, planned.label):
            ok = self._step(planned)
        with self._fail_lock:
            self._running.pop(planned.spec_key(), None)
        return ok

    def _interrupted(self, exc: BaseException) -> None:
        """The run was interrupted (Ctrl-C, SIGINT, a SystemExit from a library): the steps in progress are
        recorded as failed by the interruption, and the run's failure names the first of them."""
        with self._fail_lock:
            running = list(self._running.values())
            self._running.clear()
        error = f"interrupted: {type(exc).__name__}" + (f"({exc})" if str(exc) else "")
        for p in running:
            self.ctx.event("step.finished", stage=p.stage.value, step=p.label, uses=p.uses, key=p.spec_key(),
                           status=Status.FAILED.value, error=error, error_type=type(exc).__name__, hosts=[])
        self._fail(running[0] if running else None, exc, error)

    def _step(self, planned: PlannedStep) -> bool:
        ctx = self.ctx
        info = get_step(planned.uses)
        spec = spec_for(ctx.runbook, planned)
        params = params_of(planned)  # validated once, when the runbook was loaded
        key = planned.spec_key()
        if key in self.completed:
            ctx.event("step.already_done", stage=planned.stage.value, step=planned.label, uses=planned.uses, key=key)
            return True
        if (why := need.before_step(ctx, self.plan, self.decision, planned)) is not None:
            self._skip([planned], why)  # backup.when: before_destructive_work, and nothing destructive to do
            return True
        with self._fail_lock:
            self._running[key] = planned
        ctx.event("step.started", stage=planned.stage.value, step=planned.label, uses=planned.uses,
                  phase=planned.phase.value, hosts=planned.hosts, key=key)
        t0 = time.monotonic()
        hosts: list[HostResult] = []
        try:
            if planned.destructive:  # the step's own declaration, or the runbook's for a generic step
                self._gate(planned)
            if info.target == Target.HOSTS:
                hosts = self._on_hosts(planned, info.func, params)
                failed = [h for h in hosts if h.status == Status.FAILED]
                outcome = StepOutcome(changed=any(h.changed for h in hosts),
                                      summary=f"{len(hosts) - len(failed)}/{len(hosts)} hosts ok")
                if failed:
                    names = ", ".join(h.host for h in failed)
                    unstarted = sum(h.status == Status.SKIPPED for h in hosts)
                    extra = f"; {unstarted} host(s) not started (max_errors)" if unstarted else ""
                    error_cls = CheckFailed if planned.uses.startswith("check.") else PitstopError
                    raise error_cls(f"failed on {len(failed)} host(s): {names}: {failed[0].error}{extra}")
            else:
                outcome = info.func(ctx, params)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, then handled by policy
            status = Status.FAILED
            error = ctx.redact(str(exc) or type(exc).__name__)
            ctx.event("step.finished", stage=planned.stage.value, step=planned.label, uses=planned.uses, key=key,
                      status=status.value, error=error, error_type=type(exc).__name__,
                      duration_s=round(time.monotonic() - t0, 3), hosts=[h.model_dump() for h in hosts])
            if spec.continue_on_error:
                return True
            self._fail(planned, exc, error)
            return False
        ctx.event("step.finished", stage=planned.stage.value, step=planned.label, uses=planned.uses, key=key,
                  status=Status.SUCCEEDED.value, changed=outcome.changed, summary=ctx.redact(outcome.summary),
                  data=outcome.data, duration_s=round(time.monotonic() - t0, 3),
                  hosts=[h.model_dump() for h in hosts])
        return True

    def _on_hosts(self, planned: PlannedStep, func: Callable[..., StepOutcome],
                  params: Any) -> list[HostResult]:
        """Fan out per ``fleet:`` (concurrency, batches, canary, max_errors); see pitstop/fleet/fanout.py."""
        from .fleet.fanout import run_step_on_hosts

        def scoped(ctx: RunContext, p: Any, host: str) -> StepOutcome:  # host threads say their step too
            with ctx.step_scope(planned.stage.value, planned.label):
                return func(ctx, p, host)

        return run_step_on_hosts(self.ctx, planned, scoped, params).results

    def _gate(self, planned: PlannedStep) -> None:
        """Destructive work needs every gate of the plug-ins to pass (the verified backup of this run)."""
        verdicts = [v for p in plugins() if (v := p.gate(self.ctx)) is not None]
        if verdicts and all(v.passed for v in verdicts):
            return
        refused = [v for v in verdicts if not v.passed]
        if self.ctx.options.accept_unverified_backup:
            # who overrode the gate, and what the work it sets aside looked like at that moment
            events = self.ctx.audit.events
            started: dict[str, Any] = next((e["data"] for e in events if e["kind"] == "run.started"), {})
            by = (started.get("provenance") or {}).get("user") if isinstance(started, dict) else None
            evidence = {k: val for v in refused for k, val in v.evidence.items()}
            self.ctx.event("gate.overridden", step=planned.label, reason=self.ctx.options.reason, by=by, **evidence)
            return
        why = "; ".join(v.refusal for v in refused) or "no plug-in guards destructive steps in this installation"
        raise GateRefused(f"{planned.label} is destructive and {why}")

    # -- bookkeeping ----------------------------------------------------------------------------------
    def _fail(self, planned: PlannedStep | None, exc: BaseException, error: str | None = None) -> None:
        with self._fail_lock:  # steps of one unit may fail concurrently: the first failure is the run's
            self._record_failure(planned, exc, error)

    def _record_failure(self, planned: PlannedStep | None, exc: BaseException, error: str | None) -> None:
        verification = planned is not None and planned.stage == Stage.POST_VERIFICATION
        if self.status == Status.SUCCEEDED:
            self.status = Status.FAILED_VERIFICATION if verification and isinstance(exc, CheckFailed) \
                else Status.FAILED
        if self.failure is None:
            self.failure = {"stage": planned.stage.value if planned else None,
                            "step": planned.label if planned else None,
                            "error": error or self.ctx.redact(str(exc) or type(exc).__name__),
                            "error_type": type(exc).__name__}

    def _skip(self, steps: list[PlannedStep], why: str) -> None:
        for s in steps:
            self.ctx.event("step.skipped", stage=s.stage.value, step=s.label, uses=s.uses, reason=why)

    def _chain_head(self) -> str:
        """The audit chain as it stands at the run's end: an anchor outside the run folder (pitstop.report.anchor)."""
        events = self.ctx.audit.events
        return f"audit chain head: event {len(events)}, hash {events[-1]['hash'] if events else '-'}"

    def _database_transport(self) -> None:
        """Record how the database connection travels; one leaving the machine without TLS is a deviation."""
        try:
            t = self.ctx.db.transport()
        except Exception as exc:  # noqa: BLE001 - preflight checks report an unreachable database
            self.ctx.event("database.transport", error=self.ctx.redact(str(exc))[:300])
            return
        self.ctx.event("database.transport", **t)
        if not t["tls"] and not t["loopback"]:
            self.ctx.event("database.unencrypted", host=t["host"], sslmode=t["sslmode"],
                           reason=f"the database connection to {t['host']} leaves this machine without TLS "
                                  f"(sslmode {t['sslmode']}): set database.sslmode: require (or verify-full)")

    def _notify(self, event: str, subject: str, body: str = "", severity: str = "info", **data: Any) -> None:
        if self.ctx.notifier is not None:  # no window needed: customers hear nothing of the run
            quiet = self.decision is not None and not self.decision.window_needed
            self.ctx.notifier.notify(event, subject, body, severity=severity, internal_only=quiet, **data)

    def _start_body(self) -> str:
        o = self.ctx.options
        parts = [f"runbook {self.ctx.runbook.name} on {self.ctx.cfg.name}", f"trigger: {o.trigger.value}"]
        if o.reason:
            parts.append(f"reason: {o.reason}")
        return "\n".join(parts)

    def _finish(self) -> None:
        ctx = self.ctx
        if self.status in (Status.SKIPPED, Status.NOT_APPROVED):
            pass  # already announced: run.skipped; approval.rejected / approval.timed_out
        elif self.status == Status.SUCCEEDED:
            self._notify("run.completed", f"{ctx.runbook.name} maintenance completed", self._chain_head(),
                         severity="success")
        else:
            err = self.failure or {}
            body = f"failed step: {err.get('step')} ({err.get('stage')}): {err.get('error')}"
            if self.status == Status.FAILED_VERIFICATION:  # every difference, not just the first
                body += "\n" + "\n".join(f"- {m}" for m in ctx.state.failed_checks)
            self._notify("run.failed", f"{ctx.runbook.name} maintenance {self.status.value}",
                         body + "\n" + self._chain_head(), severity="failure")
        ctx.event("run.finished", status=self.status.value, failure=self.failure)
        # The report stage: rendered from the audit log above, sealed by manifest.json.
        ctx.event("stage.started", stage=Stage.REPORT.value, phase=Phase.AFTER.value, steps=["write report"])
        ctx.event("stage.finished", stage=Stage.REPORT.value, phase=Phase.AFTER.value,
                  status=Status.SUCCEEDED.value, duration_s=0.0)
        from .report.writer import write_report

        try:
            ctx.state.report = write_report(ctx)
        except Exception as exc:  # noqa: BLE001 - keep the audit log as the record
            try:
                ctx.event("report.failed", error=ctx.redact(f"{type(exc).__name__}: {exc}"))
            except OSError:  # the disk took not even that: the CLI says so from the missing report
                pass
        ctx.close()
