"""Plug-in registries: steps, checks and channels are registered by name.

A *step* is a verb of a runbook (``backup.postgres``, ``maintenance.on``, ``cleanup.retention`` ...).
It declares a pydantic params model, where it belongs relative to the maintenance window
(``outside``: online-safe, ``inside``: needs exclusive access), whether it is destructive (needs a
verified backup first) and what it targets (nothing, the database, or hosts of a group).
Checks register themselves as steps named ``check.<name>`` so runbooks use one mechanism.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from .errors import PluginError
from .plugin import ENTRY_POINT_GROUP, Plugin, ReportSection

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
    # what the step needs from the environment's config: None, or what is missing ("has no `retention` rules")
    needs_config: Callable[[EnvironmentConfig], str | None] | None = None


STEPS: dict[str, StepInfo] = {}

PLUGINS: list[Plugin] = []  # every plug-in found through the entry-point group, by entry-point name
_loaded = False
_loading = False
_load_lock = threading.RLock()


def step(
    name: str,
    *,
    params: type[BaseModel] = NoParams,
    placement: Placement = Placement.OUTSIDE,
    target: Target = Target.NONE,
    destructive: bool = False,
    default_group: str | Callable[[EnvironmentConfig], str] = "all",
    generic: bool = False,
    needs_config: Callable[[EnvironmentConfig], str | None] | None = None,
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
            needs_config=needs_config,
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
    """Find the plug-ins (entry-point group ``pitstop.plugins``, pitstop's own and any other installed
    distribution's) and import them, which registers their steps and checks. Once per process."""
    global _loaded, _loading
    if not _loaded:
        with _load_lock:
            if not _loaded and not _loading:  # a plug-in asking for steps while it loads gets those so far
                _loading = True
                found = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
                seen: set[str] = set()
                for ep in found:
                    if ep.name in seen:  # the same distribution seen twice on sys.path
                        continue
                    seen.add(ep.name)
                    try:
                        obj = ep.load()
                    except Exception as exc:
                        raise PluginError(f"plug-in {ep.name!r} ({ep.value}) cannot be loaded: "
                                          f"{type(exc).__name__}: {exc}") from None
                    PLUGINS.append(_as_plugin(ep.name, obj))
                _loaded, _loading = True, False
    return STEPS


def plugins() -> list[Plugin]:
    """Every plug-in, loaded (their hooks are what the engine calls)."""
    load_plugins()
    return PLUGINS


def report_sections() -> dict[str, ReportSection]:
    """Every plug-in's report sections (name -> fold of the audit events), in plug-in order."""
    return {name: build for p in plugins() for name, build in p.report_sections.items()}


def _as_plugin(name: str, obj: object) -> Plugin:
    if isinstance(obj, Plugin):
        if not obj.name:
            obj.name = name
        return obj
    if isinstance(obj, ModuleType):  # a module that only registers steps and checks
        return Plugin(name)
    raise PluginError(f"plug-in {name!r}: the entry point names a {type(obj).__name__}, not a module or a "
                      "pitstop.plugin.Plugin")


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
