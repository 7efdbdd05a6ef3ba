"""A window only when needed: from facts, does this run need the maintenance window, and the backup?

* **At the start** (:func:`decide`, the ``window.decision`` event): every exclusive step (placed inside
  the window) and, with ``backup.when: before_destructive_work``, every destructive step says whether it
  has work (:mod:`pitstop.work`; ``unknown`` counts as work). No exclusive step with work: customers
  hear nothing of the run (it will not take the site down). No destructive step with work: the backup
  steps are skipped.
* **At the window** (:func:`at_window`): the exclusive steps are asked again, with what this run has done
  so far. The window opens only if both answers say it is needed. Otherwise maintenance mode is never
  switched on: :func:`skip_window` records every window step as skipped. A step that *now* has work
  while the start said "no window needed" is not done outside a window: skipped, with a
  ``plan.deviation`` (the next run does it; customers were never told of a window).
* **At a destructive step** (:func:`before_step`) when no backup was taken: asked again; no work →
  skipped; work after all → a ``plan.deviation``, and the verified-backup gate refuses it (fail safe).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .plan import Phase, Plan, PlannedStep, placement_of, run_rank, spec_for
from .registry import StepInfo, Target, get_step
from .runbook_model import Runbook, Stage
from .work import NO_WINDOW, Decision, HasWork, StepWork, Work, combine

if TYPE_CHECKING:
    from .context import RunContext
    from .errors import Problem
    from .yamlfile import YamlDoc

BACKUP_STEPS = ("backup.postgres", "backup.verify")
NEEDS_BACKUP = ("check.backup_verified",)  # only meaningful when this run took a backup
SWITCH = (Stage.MAINTENANCE_ON, Stage.MAINTENANCE_OFF)


def exclusive(p: PlannedStep) -> bool:
    """Placed inside the window and able to change something (a read-only check inside is not)."""
    return p.phase == Phase.WINDOW and p.stage not in SWITCH and not _read_only(p)


def _read_only(p: PlannedStep) -> bool:
    return p.uses.startswith("check.") and not p.destructive


def outcome_of(ctx: RunContext, planned: PlannedStep) -> HasWork | None:
    """What a step of this run did, read off the audit log (None: it has not run)."""
    for e in reversed(ctx.audit.events):
        d = e["data"]
        if e["kind"] == "step.finished" and d.get("key") == planned.spec_key():
            if d.get("status") != "succeeded":
                return HasWork.unknown(f"it {d.get('status')} (it may have changed something)")
            return HasWork.yes("it changed something") if d.get("changed") else HasWork.no("it changed nothing")
        if e["kind"] == "step.skipped" and d.get("stage") == planned.stage.value and d.get("step") == planned.label:
            return HasWork.no("it was skipped")
    return None


def probe(ctx: RunContext, plan: Plan, planned: PlannedStep, after_run: bool = False) -> HasWork:
    """Whether ``planned`` has work, from facts (read-only; never raises). ``after_run``: steps this one
    depends on (``only_if_changed``) are judged by what they did in this run when they have run."""
    spec = spec_for(ctx.runbook, planned)
    if spec.only_if_changed:
        parts = []
        for dep in spec.only_if_changed:
            other = next(p for p in plan.steps if p.id == dep)
            done = outcome_of(ctx, other) if after_run else None
            parts.append((other.label, done or probe(ctx, plan, other, after_run)))
        w = combine(parts)
        return HasWork(answer=w.answer, why=("only if changed: " if w.answer == Work.NO else "") + w.why)
    info = get_step(planned.uses)
    if _read_only(planned):
        return HasWork.no("a read-only check")
    if info.has_work is None:
        return HasWork.unknown(f"{planned.uses} cannot tell from facts")
    try:
        params = planned.params if planned.params is not None else info.params.model_validate(spec.with_)
        if info.target == Target.HOSTS:
            return combine([(h, info.has_work(ctx, params, h)) for h in planned.hosts])
        return info.has_work(ctx, params)
    except Exception as exc:  # noqa: BLE001 - cannot tell: counts as work (the safe side)
        return HasWork.unknown(f"cannot tell: {ctx.redact(str(exc) or type(exc).__name__)[:200]}")


def decide(ctx: RunContext, plan: Plan) -> Decision:
    """The start-of-run decision (also ``pitstop plan``'s). Sets ``work`` on the steps it asked."""
    rb, when = ctx.runbook, ctx.cfg.backup.when
    rows: list[StepWork] = []
    for p in plan.steps:
        ex = exclusive(p) and rb.opens_window
        if not ex and not (p.destructive and when == "before_destructive_work"):
            continue
        p.work = probe(ctx, plan, p)
        rows.append(StepWork(id=p.id, label=p.label, uses=p.uses, exclusive=ex, destructive=p.destructive,
                             work=p.work))
    if not rb.opens_window:
        needed, why = True, "the runbook never switches maintenance mode on"
    elif not any(r.exclusive for r in rows):  # nothing for pitstop to judge: the window the runbook asks for
        needed, why = True, "no exclusive step inside the window: it opens as the runbook says"
    else:
        needed, why = _verdict([r for r in rows if r.exclusive], "exclusive")
    d = Decision(window_needed=needed, window_why=why, backup_when=when, steps=rows)
    if when == "before_destructive_work":
        d.backup_needed, why = _verdict([r for r in rows if r.destructive], "destructive")
        d.backup_why = f"backup.when: before_destructive_work — {why}"
    plan.decision = d
    return d


def _verdict(rows: list[StepWork], what: str) -> tuple[bool, str]:
    busy = [r for r in rows if r.work.counts]
    if busy:
        return True, "; ".join(f"{r.label}: {r.work.answer.value} ({r.work.why})" for r in busy[:3])
    if not rows:
        return False, f"no {what} step in the runbook"
    return False, f"no {what} step has work (" + "; ".join(f"{r.label}: {r.work.why}" for r in rows[:3]) + ")"


def recall(ctx: RunContext) -> Decision | None:
    """A resumed run keeps its first attempt's decision (what customers were, or were not, told)."""
    from pydantic import ValidationError

    for e in ctx.audit.events:
        if e["kind"] == "window.decision":
            try:
                return Decision.model_validate(e["data"])
            except ValidationError:
                return None
    return None


def start(ctx: RunContext, plan: Plan, resuming: bool) -> Decision:
    """:func:`decide` (or the first attempt's decision), recorded as ``window.decision``."""
    earlier = recall(ctx) if resuming else None
    try:
        d = earlier or decide(ctx, plan)
    except Exception as exc:  # noqa: BLE001 - cannot tell: the window and the backup as the runbook says
        d = Decision(window_needed=True, window_why=f"cannot tell: {ctx.redact(str(exc))[:200]}")
    if resuming and any(e["kind"] in ("window.opened", "maintenance.on") for e in ctx.audit.events):
        d = d.model_copy(update={"window_needed": True, "opened_earlier": True,
                                 "window_why": "an earlier attempt of this run opened the window"})
    ctx.event("window.decision", **d.model_dump(mode="json"), recalled=earlier is not None)
    return d


def at_window(ctx: RunContext, plan: Plan, d: Decision) -> tuple[bool, dict[str, HasWork]]:
    """Ask the exclusive steps again, right before the window: (open it?, answers by step id)."""
    steps = [p for p in plan.phase(Phase.WINDOW) if exclusive(p)]
    if not ctx.runbook.opens_window or d.opened_earlier or not steps:
        return True, {}
    answers = {p.id: probe(ctx, plan, p, after_run=True) for p in steps}
    return d.window_needed and any(w.counts for w in answers.values()), answers


def no_window(ctx: RunContext, plan: Plan, d: Decision, skip: Callable[[list[PlannedStep], str], None]) -> bool:
    """Right before the window: if it is not needed, record its steps as skipped and say so (True)."""
    opens, answers = at_window(ctx, plan, d)
    if not opens:
        skip_window(ctx, plan, d, answers, skip)
    return not opens


def skip_window(ctx: RunContext, plan: Plan, d: Decision, answers: dict[str, HasWork],
                skip: Callable[[list[PlannedStep], str], None]) -> None:
    """The window is not needed: maintenance mode stays off; every window step is recorded as skipped."""
    late = [p for p in plan.phase(Phase.WINDOW) if exclusive(p) and answers[p.id].counts]
    why = d.window_why if not d.window_needed else "at the window, " + _verdict(
        [StepWork(id=p.id, label=p.label, uses=p.uses, exclusive=True, destructive=p.destructive, work=answers[p.id])
         for p in plan.phase(Phase.WINDOW) if exclusive(p)], "exclusive")[1]
    ctx.event("window.not_needed", reason=NO_WINDOW, why=why, decided_at_start=d.window_needed)
    for p in plan.phase(Phase.WINDOW):
        if not exclusive(p):  # the switch itself, read-only checks placed inside
            skip([p], NO_WINDOW)
        elif p in late:  # decided "no window" at the start, has work now: never outside a window
            w = answers[p.id]
            deviation(ctx, p, NO_WINDOW, w, f"{p.label} has work now ({w.why}) but the run decided at its start "
                      "that no window was needed: not done outside a window; the next run does it")
            skip([p], f"has work now ({w.why}), but no window is open: not done (deviation recorded)")
        else:
            skip([p], f"no work: {answers[p.id].why} ({NO_WINDOW})")


def before_step(ctx: RunContext, plan: Plan, d: Decision | None, planned: PlannedStep) -> str | None:
    """Why ``planned`` is skipped under the backup rule, or None (it runs; the gate still applies)."""
    if d is None or d.backup_needed:
        return None
    if planned.uses in BACKUP_STEPS or planned.uses in NEEDS_BACKUP:
        return f"no backup needed ({d.backup_why})"
    if not planned.destructive:
        return None
    w = probe(ctx, plan, planned, after_run=True)
    if not w.counts:
        return f"no work: {w.why} (nothing destructive runs, so no backup was needed)"
    deviation(ctx, planned, "no destructive work", w, f"{planned.label} has work now ({w.why}) but the run took "
              "no backup (backup.when: before_destructive_work): the verified-backup gate decides")
    return None


def deviation(ctx: RunContext, planned: PlannedStep, decided: str, w: HasWork, reason: str) -> None:
    """Facts changed between the decision and the step: recorded (report: deviations) and told to ops."""
    ctx.event("plan.deviation", stage=planned.stage.value, step=planned.label, decided=decided,
              now=w.answer.value, why=w.why, reason=reason)
    if ctx.notifier is not None:
        ctx.notifier.notify("plan.deviation", f"facts changed: {planned.label}", reason, severity="warning",
                            internal_only=True, stage=planned.stage.value)


def only_if_problems(rb: Runbook, doc: YamlDoc, infos: dict[str, StepInfo]) -> list[Problem]:
    """``only_if_changed`` names known ids of steps that run before this one (never on the switch itself)."""
    problems: list[Problem] = []
    where = {s.id: (si, ti) for si, st in enumerate(rb.stages) for ti, s in enumerate(st.steps) if s.id}
    for si, stage in enumerate(rb.stages):
        for ti, spec in enumerate(stage.steps):
            loc: list[Any] = ["stages", si, "steps", ti, "only_if_changed"]
            if spec.only_if_changed and stage.name in SWITCH:
                problems.append(doc.problem(loc, "the maintenance switch follows the window decision: "
                                                 "only_if_changed is not allowed here"))
                continue
            for k, dep in enumerate(spec.only_if_changed or []):
                if dep not in where:
                    known = ", ".join(sorted(where)) or "none"
                    problems.append(doc.problem([*loc, k], f"only_if_changed: unknown step id {dep!r} (ids: {known})"))
                    continue
                dsi, dti = where[dep]
                dspec, dstage = rb.stages[dsi].steps[dti], rb.stages[dsi].name
                if spec.uses not in infos or dspec.uses not in infos:
                    continue
                mine = run_rank(stage.name, placement_of(stage.name, spec, infos[spec.uses])[1])
                theirs = run_rank(dstage, placement_of(dstage, dspec, infos[dspec.uses])[1])
                if theirs > mine or (theirs == mine and dep not in (spec.after or [])):
                    problems.append(doc.problem([*loc, k], f"only_if_changed: {dep!r} must have finished before "
                                                           "this step (an earlier stage or phase, or list it in "
                                                           "`after:`)"))
    return problems
