"""Runbooks (``runbooks/*.yaml``): data, not code. The loader and its checks; the models are in
:mod:`pitstop.runbook_model` (re-exported here, where callers have always found them).

A runbook is a list of stages in a fixed order; each stage lists steps by registered name
(``uses``), with parameters (``with``), a host group (``targets``) for host steps, and an optional
window placement override (``window: inside|outside``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import yamlfile
from .config import EnvironmentConfig, default_search_dirs, shadowed
from .dag import dependency_problems
from .errors import Problem, RunbookError
from .need import only_if_problems
from .registry import Target, host_group, load_plugins
from .runbook_model import STAGE_ORDER, WINDOW_STAGES, Runbook, Stage, StageSpec, StepSpec

__all__ = ["STAGE_ORDER", "WINDOW_STAGES", "Runbook", "Stage", "StageSpec", "StepSpec", "approval_problems",
           "check_runbook", "find_runbook", "load_runbook"]


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
        problems += dependency_problems(rb, doc, steps)
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
