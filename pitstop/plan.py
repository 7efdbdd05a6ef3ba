"""The planner: where every step runs relative to the maintenance window. Changes nothing.

Phases, in order:
  ``before``  preflight, pre-backup and every online-safe (``outside``) step of the cleanup and
              tuning stages: the platform still serves users;
  ``window``  maintenance on, the steps that need exclusive access (``inside``), maintenance off;
  ``after``   post-verification and the report.
A step's placement is its runbook override (``window:``) or what the step declares.

Every planned step also carries its dependencies (``after``, see pitstop/dag.py) and, with
:func:`forecast_window`, the predicted in-window time and critical path (history, else estimates).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from .config import EnvironmentConfig
from .placement import (  # noqa: F401 - re-exported: where callers have always found them
    ALWAYS_AFTER,
    ALWAYS_BEFORE,
    ORDER,
    WINDOW_RANK,
    Phase,
    WaitPoint,
    placement_of,
    run_rank,
)
from .registry import Placement, Target, get_step, host_group
from .runbook_model import Runbook, Stage, StepSpec
from .work import Decision, HasWork

if TYPE_CHECKING:
    from .context import RunContext


class PlannedStep(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: int
    stage: Stage
    uses: str
    label: str
    placement: Placement
    phase: Phase
    why: str
    destructive: bool
    target: Target
    hosts: list[str] = Field(default_factory=list)
    would: list[str] = Field(default_factory=list)
    id: str = ""  # the runbook's ``id:``, else "<stage>/<index>"
    after: list[str] = Field(default_factory=list)  # ids that must finish first (declared or implied)
    estimate_s: float | None = None
    # the runbook's step and its validated parameters, carried for the executor (not in the plan's JSON)
    spec: StepSpec | None = Field(None, exclude=True, repr=False)
    params: BaseModel | None = Field(None, exclude=True, repr=False)
    work: HasWork | None = None  # whether it has work, from facts (pitstop/need.py; exclusive/destructive steps)

    def spec_key(self) -> str:
        return f"{self.stage.value}/{self.index}/{self.uses}"


class WindowForecast(BaseModel):
    """Predicted time between maintenance on and off, and the chain of steps that sets it."""

    seconds: float
    critical_path: list[str]  # step ids, in order
    sources: dict[str, str] = Field(default_factory=dict)  # step id -> history | estimate | unknown


class Plan(BaseModel):
    environment: str
    runbook: str
    steps: list[PlannedStep]
    forecast: WindowForecast | None = None
    approval: WaitPoint | None = None
    decision: Decision | None = None  # window and backup needed? (pitstop/need.py)

    def phase(self, phase: Phase) -> list[PlannedStep]:
        return [s for s in self.steps if s.phase == phase]


def build_plan(cfg: EnvironmentConfig, runbook: Runbook) -> Plan:
    steps: list[PlannedStep] = []
    for stage_spec in runbook.stages:
        for i, spec in enumerate(stage_spec.steps):
            info = get_step(spec.uses)
            params = spec.params if isinstance(spec.params, info.params) else info.params.model_validate(spec.with_)
            placement, phase, why = placement_of(stage_spec.name, spec, info)
            hosts = cfg.group_hosts(host_group(info, spec.targets, cfg)) if info.target == Target.HOSTS else []
            steps.append(PlannedStep(index=i, stage=stage_spec.name, uses=spec.uses, label=spec.label,
                                     placement=placement, phase=phase, why=why,
                                     destructive=info.destructive or bool(spec.destructive),
                                     target=info.target, hosts=hosts, id=spec.id or f"{stage_spec.name.value}/{i}",
                                     estimate_s=spec.estimate.total_seconds() if spec.estimate else None,
                                     spec=spec, params=params))
    steps.sort(key=lambda s: (ORDER[s.phase], WINDOW_RANK.get(s.stage, 1) if s.phase == Phase.WINDOW else 0))
    _link(runbook, steps)
    from .approval import wait_point

    return Plan(environment=cfg.name, runbook=runbook.name, steps=steps, approval=wait_point(cfg, runbook, steps))


def _link(runbook: Runbook, steps: list[PlannedStep]) -> None:
    """Fill ``after``: declared ids, else the previous undeclared step of the same stage and phase
    (runbook order, the conservative default). Read-only post-verification checks need nothing."""
    previous: dict[tuple[Stage, Phase], str] = {}
    for s in steps:
        declared = spec_for(runbook, s).after
        if declared is not None:
            s.after = list(declared)
            continue
        key = (s.stage, s.phase)
        if s.stage != Stage.POST_VERIFICATION and key in previous:
            s.after = [previous[key]]
        previous[key] = s.id


def step_history(cfg: EnvironmentConfig, runbook: str, limit: int = 10) -> dict[str, float]:
    """p90 duration per ``stage/step label`` over the latest successful runs of ``runbook``."""
    from .history import p90, recent_reports

    per: dict[str, list[float]] = {}
    for r in recent_reports(cfg, runbook, limit):
        for stage in r.get("stages", []):
            for st in stage.get("steps", []):
                if st.get("status") == "succeeded" and st.get("duration_s") is not None:
                    per.setdefault(f"{stage['name']}/{st['name']}", []).append(float(st["duration_s"]))
    return {k: p90(v) for k, v in per.items()}


def forecast_window(plan: Plan, history: dict[str, float] | None = None,
                    stage_totals: dict[str, float] | None = None) -> WindowForecast:
    """Predicted in-window time: units run one after another, each as long as its longest chain.

    A step costs its p90 from earlier reports (``history``), else its ``estimate:``, else 0
    (listed as ``unknown``). A unit none of whose steps has either falls back to the stage's p90
    from :func:`pitstop.window.stage_history` (``stage_totals``) when the whole stage is inside.
    """
    from itertools import groupby

    from .dag import longest_path

    history, stage_totals = history or {}, stage_totals or {}
    sources: dict[str, str] = {}

    def cost(s: PlannedStep) -> float:
        if f"{s.stage.value}/{s.label}" in history:
            sources[s.id] = "history"
            return history[f"{s.stage.value}/{s.label}"]
        sources[s.id] = "estimate" if s.estimate_s is not None else "unknown"
        return s.estimate_s or 0.0

    total, path = 0.0, []
    for stage, group in groupby(plan.phase(Phase.WINDOW), key=lambda s: s.stage):
        unit = list(group)
        secs, chain = longest_path(unit, cost)
        whole = all(p.phase == Phase.WINDOW for p in plan.steps if p.stage == stage)
        if all(sources[s.id] == "unknown" for s in unit) and whole and stage.value in stage_totals:
            secs = stage_totals[stage.value]
            sources.update({s.id: "stage history" for s in unit})
        total += secs
        path += chain
    return WindowForecast(seconds=round(total, 3), critical_path=path, sources=sources)


def describe_changes(ctx: RunContext, plan: Plan) -> Plan:
    """Fill ``would`` with what each step would change, read-only (steps with a planner)."""
    for planned in plan.steps:
        info = get_step(planned.uses)
        params = params_of(planned)
        if info.plan is None:
            continue
        try:
            if info.target == Target.HOSTS:
                for host in planned.hosts:
                    planned.would += [f"{host}: {line}" for line in info.plan(ctx, params, host)]
            else:
                planned.would += info.plan(ctx, params)
        except Exception as exc:  # noqa: BLE001 - a plan shows problems instead of stopping
            planned.would.append(f"cannot tell: {ctx.redact(str(exc))}")
    return plan


def spec_for(runbook: Runbook, planned: PlannedStep) -> StepSpec:
    if planned.spec is not None:
        return planned.spec
    stage = runbook.stage(planned.stage)
    assert stage is not None
    return stage.steps[planned.index]


def params_of(planned: PlannedStep) -> BaseModel:
    """The step's validated parameters, as the plan carries them."""
    assert planned.params is not None, f"{planned.label}: planned without its parameters"
    return planned.params


def with_forecast(cfg: EnvironmentConfig, plan: Plan) -> Plan:
    """Attach the in-window forecast from this environment's earlier reports (else estimates)."""
    from .window import stage_history

    plan.forecast = forecast_window(plan, step_history(cfg, plan.runbook), stage_history(cfg, plan.runbook))
    return plan


def forecast_lines(plan: Plan) -> list[str]:
    """Human summary of the forecast, for ``pitstop plan``."""
    f = plan.forecast
    if f is None:
        return []
    labels = {s.id: s.label for s in plan.steps}
    unknown = [labels[i] for i, src in f.sources.items() if src == "unknown"]
    used = sorted({src for src in f.sources.values() if src != "unknown"}) or ["nothing known"]
    lines = [f"predicted in-window time: {f.seconds:.1f}s (from {', '.join(used)})",
             "critical path: " + " → ".join(labels[i] for i in f.critical_path)]
    if unknown:
        lines.append(f"no history or estimate (counted as 0s): {', '.join(unknown)}")
    return lines
