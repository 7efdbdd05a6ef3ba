"""The runbook's models (``runbooks/*.yaml``): stages in a fixed order, steps by registered name. Data only: the
loader and its checks are :mod:`pitstop.runbook`, which re-exports these names. Modules the loader's checks use
(placement, dag, need, plan, window, approval) import the models from here, so nothing loops back to the loader."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .config import ApprovalConfig, Name
from .registry import Placement
from .units import Duration


class Stage(StrEnum):
    PREFLIGHT = "preflight"
    PRE_BACKUP = "pre-backup"
    MAINTENANCE_ON = "maintenance-on"
    DATABASE_CLEANUP = "database-cleanup"
    SERVER_TUNING = "server-tuning"
    MAINTENANCE_OFF = "maintenance-off"
    POST_VERIFICATION = "post-verification"
    REPORT = "report"


STAGE_ORDER = list(Stage)
# Stages that sit between maintenance on and off: their steps run inside the window unless they
# are declared online-safe, in which case the planner moves them before the window.
WINDOW_STAGES = {Stage.DATABASE_CLEANUP, Stage.SERVER_TUNING}


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    uses: str = Field(description="registered step name, e.g. backup.postgres or check.postgres_connect")
    name: str | None = Field(None, description="label shown in plans and reports")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    targets: str | None = Field(None, description="host group for host steps (default: the step's own)")
    window: Placement | None = Field(None, description="override the step's declared placement")
    continue_on_error: bool = False
    destructive: bool | None = Field(None, description="generic steps (host.command, host.script, check.sql_assert) "
                                     "must say whether they destroy data: `true` puts them under the verified-backup "
                                     "gate")
    estimate: Duration | None = Field(None, description="expected duration, used for window admission "
                                                         "until history exists")
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                           description="name other steps use in `after:` (docs/window.md)")
    after: list[str] | None = Field(None, description="ids of steps that must finish first; unset: the "
                                                      "previous step of the stage without `after:`")
    only_if_changed: list[str] | None = Field(None, min_length=1, description="ids of earlier steps: this step "
                                              "has work only when one of them changes something (docs/window.md)")

    # the ``with:`` parameters validated against the step's model, by the runbook check (not serialized)
    _params: BaseModel | None = PrivateAttr(None)

    @property
    def label(self) -> str:
        return self.name or self.uses

    @property
    def params(self) -> BaseModel | None:
        return self._params

    @params.setter
    def params(self, value: BaseModel) -> None:
        self._params = value


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Stage
    steps: list[StepSpec] = Field(default_factory=list)


class Runbook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: str = ""
    kind: Literal["monthly", "quarterly", "emergency", "custom"] = "custom"
    expected_downtime: Duration | None = None
    affects: list[str] | None = Field(None, description="features affected during the window (default: the "
                                      "config's notifications.notices.affects; none without a maintenance step)")
    stages: list[StageSpec]
    approval: ApprovalConfig | None = Field(None, description="wait for a named approver before the destructive "
                                            "part (docs/approvals.md); replaces the environment's `approval:`")

    source: str = Field("", exclude=True)

    def stage(self, name: Stage) -> StageSpec | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def opens_window(self) -> bool:
        """Whether the runbook ever puts the site into maintenance mode (a ``maintenance.on`` step)."""
        return any(step.uses == "maintenance.on" for stage in self.stages for step in stage.steps)

    def announced_downtime(self, default: timedelta) -> timedelta:
        """What the run announces: nothing without a maintenance step; else the runbook's own figure (0 is a
        figure), else ``default`` (the environment's ``window.expected_downtime``)."""
        if not self.opens_window:
            return timedelta(0)
        return self.expected_downtime if self.expected_downtime is not None else default
