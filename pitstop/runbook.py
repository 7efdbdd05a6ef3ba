"""Runbooks (``runbooks/*.yaml``): data, not code. Models and the loader.

A runbook is a list of stages in a fixed order; each stage lists steps by registered name
(``uses``), with parameters (``with``), a host group (``targets``) for host steps, and an optional
window placement override (``window: inside|outside``).
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from . import yamlfile
from .config import ApprovalConfig, EnvironmentConfig, Name, default_search_dirs, shadowed
from .errors import Problem, RunbookError
from .registry import Placement, Target, host_group, load_plugins
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


def find_runbook(name: str) -> Path:
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        return candidate
    for base in default_search_dirs("runbooks"):
        p = base / f"{name}.yaml"
        if p.is_file():
            return p
    return Path("runbooks") / f"{name}.yaml"


def load_runbook(name: str, cfg: EnvironmentConfig | None = None, *, announce: bool = True) -> Runbook:
    """Load and fully validate a runbook; with ``cfg``, host groups are checked against it too.
    ``announce=False`` for a runbook read only for a figure (another schedule's downtime): the command's
    ``runbook:`` line names the runbook it runs, not every file it peeks at."""
    path = find_runbook(name)
    if announce:
        yamlfile.announce("runbook", path, shadowed(name, "runbooks", path))
    doc = yamlfile.load(path, RunbookError)
    rb = yamlfile.validate(doc, Runbook, RunbookError)
    problems = check_runbook(rb, doc, cfg)
    if problems:
        raise RunbookError(problems)
    rb.source = str(path)
    return rb


def check_runbook(rb: Runbook, doc: yamlfile.YamlDoc, cfg: EnvironmentConfig | None) -> list[Problem]:
    steps = load_plugins()
    problems: list[Problem] = []
    seen: list[Stage] = []
    for si, stage in enumerate(rb.stages):
        if stage.name in seen:
            problems.append(doc.problem(["stages", si, "name"], f"stage {stage.name.value!r} appears twice"))
        elif seen and STAGE_ORDER.index(stage.name) < STAGE_ORDER.index(seen[-1]):
            order = " → ".join(s.value for s in STAGE_ORDER)
            problems.append(doc.problem(["stages", si, "name"], f"stage out of order (expected {order})"))
        seen.append(stage.name)
        for ti, spec in enumerate(stage.steps):
            loc: list[Any] = ["stages", si, "steps", ti]
            info = steps.get(spec.uses)
            if info is None:
                known = ", ".join(sorted(steps))
                problems.append(doc.problem([*loc, "uses"], f"unknown step {spec.uses!r} (known: {known})"))
                continue
            try:
                spec.params = info.params.model_validate(spec.with_)  # validated once: the plan carries it
            except ValidationError as exc:
                for e in exc.errors():
                    problems.append(doc.problem([*loc, "with", *e["loc"]], yamlfile.describe(dict(e))))
            if info.generic and spec.destructive is None:
                problems.append(doc.problem(loc, f"step {spec.uses!r} runs whatever the runbook says: declare "
                                                 "`destructive: true` (it needs this run's verified backup) or "
                                                 "`destructive: false`"))
            elif spec.destructive is False and info.destructive:
                problems.append(doc.problem([*loc, "destructive"], f"step {spec.uses!r} is destructive; "
                                                                   "it cannot be declared otherwise"))
            if spec.targets is not None and info.target != Target.HOSTS:
                problems.append(doc.problem([*loc, "targets"], f"step {spec.uses!r} does not run on hosts"))
            elif cfg is not None and info.target == Target.HOSTS:
                group = host_group(info, spec.targets, cfg)
                try:
                    cfg.group_hosts(group)
                except ValueError as exc:
                    problems.append(doc.problem([*loc, "targets"], str(exc)))
    if cfg is not None:  # what a step needs from the config (cleanup.retention: rules), once per stage and step
        for si, stage in enumerate(rb.stages):
            for uses in dict.fromkeys(s.uses for s in stage.steps):
                info = steps.get(uses)
                missing = info.needs_config(cfg) if info is not None and info.needs_config else None
                if missing:
                    problems.append(doc.problem(["stages", si], f"{uses} used but {cfg.source or 'the config'} "
                                                                f"{missing}"))
    problems += approval_problems(rb, doc, cfg)
    if not problems:
        from .dag import dependency_problems

        problems += dependency_problems(rb, doc, steps)
        from .need import only_if_problems

        problems += only_if_problems(rb, doc, steps)
    return problems


def approval_problems(rb: Runbook, doc: yamlfile.YamlDoc, cfg: EnvironmentConfig | None) -> list[Problem]:
    """A runbook's ``approval:`` names a stage the runbook has, an audience the config knows, and is skipped
    only by an emergency runbook (docs/approvals.md)."""
    a = rb.approval
    if a is None:
        return []
    problems = []
    if a.skip and rb.kind != "emergency":
        problems.append(doc.problem(["approval", "skip"], f"only an emergency runbook may skip approval (this one "
                                                          f"is kind {rb.kind!r})"))
    names = [s.name.value for s in rb.stages]
    if not a.skip and a.before not in names:
        problems.append(doc.problem(["approval", "before"], f"stage {a.before!r} is not in this runbook (its "
                                                            f"stages: {', '.join(names)})"))
    if cfg is not None and a.audience not in {"ops", *cfg.notifications.audiences}:
        known = ", ".join(sorted({"ops", *cfg.notifications.audiences}))
        problems.append(doc.problem(["approval", "audience"], f"unknown audience {a.audience!r} (known: {known})"))
    return problems
