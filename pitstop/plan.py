"""The planner: where every step runs relative to the maintenance window. Changes nothing.

Phases, in order:
  ``before``  preflight, pre-backup and every online-safe (``outside``) step of the cleanup and
              tuning stages: the platform still serves users;
  ``window``  maintenance on, the steps that need exclusive access (``inside``), maintenance off;
  ``after``   post-verification and the report.
A step's placement is its runbook override (``window:``) or what the step declares.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from .config import EnvironmentConfig
from .registry import Placement, StepInfo, Target, get_step, host_group
from .runbook import Runbook, Stage, StepSpec

if TYPE_CHECKING:
    from .context import RunContext


class Phase(StrEnum):
    BEFORE = "before"
    WINDOW = "window"
    AFTER = "after"


ALWAYS_BEFORE = {Stage.PREFLIGHT}
ALWAYS_AFTER = {Stage.POST_VERIFICATION, Stage.REPORT}


class PlannedStep(BaseModel):
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

    def spec_key(self) -> str:
        return f"{self.stage.value}/{self.index}/{self.uses}"


class Plan(BaseModel):
    environment: str
    runbook: str
    steps: list[PlannedStep]

    def phase(self, phase: Phase) -> list[PlannedStep]:
        return [s for s in self.steps if s.phase == phase]


def _placement(stage: Stage, spec: StepSpec, info: StepInfo) -> tuple[Placement, Phase, str]:
    if stage in ALWAYS_BEFORE:
        return Placement.OUTSIDE, Phase.BEFORE, "preflight runs before anything changes"
    if stage in ALWAYS_AFTER:
        return Placement.OUTSIDE, Phase.AFTER, "verification and reporting follow the window"
    if stage == Stage.MAINTENANCE_ON:
        return Placement.INSIDE, Phase.WINDOW, "opens the window"
    if stage == Stage.MAINTENANCE_OFF:
        return Placement.INSIDE, Phase.WINDOW, "closes the window"
    if spec.window is not None:
        placement, why = spec.window, f"runbook sets window: {spec.window.value}"
    else:
        placement = info.placement
        why = ("declared online-safe" if placement == Placement.OUTSIDE else "declared exclusive (needs the window)")
    return placement, (Phase.WINDOW if placement == Placement.INSIDE else Phase.BEFORE), why


def build_plan(cfg: EnvironmentConfig, runbook: Runbook) -> Plan:
    steps: list[PlannedStep] = []
    for stage_spec in runbook.stages:
        for i, spec in enumerate(stage_spec.steps):
            info = get_step(spec.uses)
            placement, phase, why = _placement(stage_spec.name, spec, info)
            hosts = cfg.group_hosts(host_group(info, spec.targets, cfg)) if info.target == Target.HOSTS else []
            steps.append(PlannedStep(index=i, stage=stage_spec.name, uses=spec.uses, label=spec.label,
                                     placement=placement, phase=phase, why=why, destructive=info.destructive,
                                     target=info.target, hosts=hosts))
    order = {Phase.BEFORE: 0, Phase.WINDOW: 1, Phase.AFTER: 2}
    window_rank = {Stage.MAINTENANCE_ON: 0, Stage.MAINTENANCE_OFF: 2}
    steps.sort(key=lambda s: (order[s.phase], window_rank.get(s.stage, 1) if s.phase == Phase.WINDOW else 0))
    return Plan(environment=cfg.name, runbook=runbook.name, steps=steps)


def describe_changes(ctx: RunContext, plan: Plan) -> Plan:
    """Fill ``would`` with what each step would change, read-only (steps with a planner)."""
    for planned in plan.steps:
        info = get_step(planned.uses)
        spec = spec_for(ctx.runbook, planned)
        params = info.params.model_validate(spec.with_)
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
    stage = runbook.stage(planned.stage)
    assert stage is not None
    return stage.steps[planned.index]
