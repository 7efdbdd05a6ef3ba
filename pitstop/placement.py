"""Where a step runs relative to the maintenance window (phases ``before``, ``window``, ``after``) and in what
order (ranks); the approval's wait point. Pure functions of the runbook's models and the steps' declarations:
the runbook's checks (pitstop/dag.py, pitstop/need.py), the planner and the approval use them."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel

from .registry import Placement, StepInfo
from .runbook_model import STAGE_ORDER, Stage, StepSpec


class Phase(StrEnum):
    BEFORE = "before"
    WINDOW = "window"
    AFTER = "after"


ALWAYS_BEFORE = {Stage.PREFLIGHT}
ALWAYS_AFTER = {Stage.POST_VERIFICATION, Stage.REPORT}


class WaitPoint(BaseModel):
    """Where the run waits for approval (pitstop/approval.py): before ``step`` (a plan step id)."""

    step: str
    label: str
    stage: Stage
    phase: Phase
    approvers: list[str]
    audience: str
    timeout_s: float
    on_timeout: str
    source: str  # runbook | environment
    skipped: str | None = None  # an emergency runbook's reason for skipping approval: no wait


ORDER = {Phase.BEFORE: 0, Phase.WINDOW: 1, Phase.AFTER: 2}
WINDOW_RANK = {Stage.MAINTENANCE_ON: 0, Stage.MAINTENANCE_OFF: 2}


def run_rank(stage: Stage, phase: Phase) -> tuple[int, int, int]:
    """When a (stage, phase) runs: steps of a lower rank have finished before a higher one starts."""
    return ORDER[phase], WINDOW_RANK.get(stage, 1) if phase == Phase.WINDOW else 0, STAGE_ORDER.index(stage)


def placement_of(stage: Stage, spec: StepSpec, info: StepInfo) -> tuple[Placement, Phase, str]:
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
