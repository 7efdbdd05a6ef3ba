"""Plug-in registries: steps, checks and channels are registered by name.

A *step* is a verb of a runbook (``backup.postgres``, ``maintenance.on``, ``cleanup.retention`` ...).
It declares a pydantic params model, where it belongs relative to the maintenance window
(``outside``: online-safe, ``inside``: needs exclusive access), whether it is destructive (needs a
verified backup first) and what it targets (nothing, the database, or hosts of a group).
Checks register themselves as steps named ``check.<name>`` so runbooks use one mechanism.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from .config import EnvironmentConfig
    from .model import StepOutcome
    from .work import HasWork


class Placement(StrEnum):
    OUTSIDE = "outside"  # online-safe: may run while the platform serves users
    INSIDE = "inside"  # needs exclusive access: runs inside the maintenance window


class Target(StrEnum):
    NONE = "none"
    DATABASE = "database"
    HOSTS = "hosts"


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


StepFunc = Callable[..., "StepOutcome"]
PlanFunc = Callable[..., list[str]]
WorkFunc = Callable[..., "HasWork"]  # (ctx, params[, host]) -> HasWork: read-only, from facts


@dataclass
class StepInfo:
    name: str
    func: StepFunc
    params: type[BaseModel]
    placement: Placement
    target: Target
    destructive: bool
    description: str
    plan: PlanFunc | None = None
    has_work: WorkFunc | None = None  # whether the step would change anything (docs/window.md)
    default_group: str | Callable[[EnvironmentConfig], str] = "all"
    extra: dict[str, Any] = field(default_factory=dict)
    generic: bool = False  # runs what the runbook says: the runbook must declare `destructive:` for it


STEPS: dict[str, StepInfo] = {}

# Modules whose import registers the built-in plug-ins.
PLUGIN_MODULES = [
    "pitstop.steps.backup",
    "pitstop.steps.maintenance_mode",
    "pitstop.steps.cleanup",
    "pitstop.steps.tuning",
    "pitstop.steps.commands",
    "pitstop.steps.sysctl",
    "pitstop.steps.services",
    "pitstop.steps.packages",
    "pitstop.steps.reclaim",
    "pitstop.checks",
    "checks.postgres",
    "checks.hosts",
    "checks.http",
    "checks.net",
    "checks.data",
]
_loaded = False


def step(
    name: str,
    *,
    params: type[BaseModel] = NoParams,
    placement: Placement = Placement.OUTSIDE,
    target: Target = Target.NONE,
    destructive: bool = False,
    default_group: str | Callable[[EnvironmentConfig], str] = "all",
    generic: bool = False,
) -> Callable[[StepFunc], StepFunc]:
    """Register a step function under ``name``.

    The function is called as ``func(ctx, params)`` for ``Target.NONE``/``DATABASE`` steps and
    ``func(ctx, params, host)`` once per host for ``Target.HOSTS`` steps.
    """

    def deco(func: StepFunc) -> StepFunc:
        if name in STEPS and STEPS[name].func is not func:
            raise ValueError(f"step {name!r} registered twice")
        STEPS[name] = StepInfo(
            name=name,
            func=func,
            params=params,
            placement=placement,
            target=target,
            destructive=destructive,
            description=(func.__doc__ or "").strip().splitlines()[0] if func.__doc__ else "",
            default_group=default_group,
            generic=generic,
        )
        return func

    return deco


def planner(name: str) -> Callable[[PlanFunc], PlanFunc]:
    """Register the read-only ``plan`` function of step ``name`` (what it would change)."""

    def deco(func: PlanFunc) -> PlanFunc:
        STEPS[name].plan = func
        return func

    return deco


def has_work(name: str) -> Callable[[WorkFunc], WorkFunc]:
    """Register the read-only probe of step ``name``: does it have work (yes/no/unknown + why), from facts."""

    def deco(func: WorkFunc) -> WorkFunc:
        STEPS[name].has_work = func
        return func

    return deco


def load_plugins() -> dict[str, StepInfo]:
    global _loaded
    if not _loaded:
        for mod in PLUGIN_MODULES:
            importlib.import_module(mod)
        _loaded = True
    return STEPS


def host_group(info: StepInfo, targets: str | None, cfg: EnvironmentConfig) -> str:
    """The host group a host step runs on: the runbook's ``targets`` or the step's default."""
    if targets:
        return targets
    return info.default_group(cfg) if callable(info.default_group) else info.default_group


def get_step(name: str) -> StepInfo:
    steps = load_plugins()
    if name not in steps:
        raise KeyError(name)
    return steps[name]
