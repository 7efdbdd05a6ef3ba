"""The plug-in contract: what the engine knows of a plug-in, and all it knows.

A *plug-in* is a module found through the entry-point group ``pitstop.plugins`` (``pyproject.toml``)::

    [project.entry-points."pitstop.plugins"]
    my_area = "my_package.steps"           # a module: its import registers steps and checks
    maintenance_mode = "pitstop.maintenance_mode.steps:PLUGIN"   # or a Plugin object with hooks

Importing the module registers its steps (:func:`pitstop.registry.step`) and checks
(:func:`pitstop.checks.check`). A plug-in that needs more from the engine points the entry point at a
:class:`Plugin` object declaring

- ``state``: its typed share of a run's state (a :class:`PluginState` model), created empty for every run
  and rebuilt from the audit log when a run is resumed (:meth:`PluginState.rebuild`);
- hooks the engine calls at fixed points of a run: :meth:`Plugin.window_guard` (around the window's
  work: the dead-man keeper of maintenance mode), :meth:`Plugin.window_status` (whether it still holds
  the platform out of service, and since when), :meth:`Plugin.safety_net` (always-finally: lift
  maintenance mode after a failure), :meth:`Plugin.gate` (before a destructive step: the verified
  backup) and :attr:`Plugin.report_sections` (parts of the report folded from the audit log).

The engine (plan, executor, runner, resume, context, runbook, dag) imports this module, never a
plug-in's; ``tests/unit/test_import_graph.py`` keeps it so. ``docs/plugins.md`` explains it with an example.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from .context import RunContext

ENTRY_POINT_GROUP = "pitstop.plugins"
Event = dict[str, Any]


class PluginState(BaseModel):
    """A plug-in's share of a run's state. One instance per run (``ctx.state.of(MyState)``); typed fields
    with defaults, so the empty state is valid. Steps of several threads may touch it: plug-ins guard
    their own updates."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    def rebuild(self, events: list[Event]) -> None:
        """Fold an earlier attempt's audit events into this state (``pitstop resume``). Default: nothing
        carries over."""


@dataclass(frozen=True)
class WindowStatus:
    """What a plug-in that takes the platform out of service says about it, for the engine's window."""

    held: bool  # something this run switched on is still on (the safety net would act)
    down_since: str | None = None  # ISO time: out of service since then, per earlier attempts (resume)
    lifted_at: str | None = None  # ISO time the earlier attempts last put it back in service


@dataclass(frozen=True)
class GateVerdict:
    """A gate's answer before a destructive step: ``passed``, or why not (``refusal``); ``evidence`` is what
    the audit log records when an operator overrides a refusal."""

    passed: bool
    refusal: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)


class Notify(Protocol):
    def __call__(self, event: str, subject: str, body: str = "", severity: str = "info", **data: Any) -> None: ...


ReportSection = Callable[[list[Event]], Any]


class Plugin:
    """A plug-in with hooks. Subclass it and override what the plug-in needs; every hook has a default
    that does nothing, so the engine calls every plug-in's hooks without asking what it is."""

    state: ClassVar[type[PluginState] | None] = None
    report_sections: ClassVar[dict[str, ReportSection]] = {}

    def __init__(self, name: str = ""):
        self.name = name

    def window_guard(self, ctx: RunContext) -> AbstractContextManager[Any] | None:
        """A context manager held around the window's work (e.g. renewing a dead-man's switch), or None."""
        return None

    def window_status(self, ctx: RunContext) -> WindowStatus | None:
        """Whether the platform is still held out of service by this plug-in (None: it never does that)."""
        return None

    def safety_net(self, ctx: RunContext, notify: Notify) -> bool:
        """Always-finally, after the window or an interruption: undo what must not outlive the run. True if
        it acted and succeeded. It records and announces its own failures and never raises."""
        return False

    def gate(self, ctx: RunContext) -> GateVerdict | None:
        """Before a destructive step: this plug-in's verdict, or None when it does not guard destructive work."""
        return None

    def __repr__(self) -> str:
        return f"<pitstop plug-in {self.name or type(self).__name__}>"
