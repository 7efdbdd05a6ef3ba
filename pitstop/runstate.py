"""A run's state, typed: the engine's own fields, and one :class:`pitstop.plugin.PluginState` per plug-in.

Nothing here is a free-form dict keyed by strings: a plug-in reads and writes its share through
``ctx.state.of(ItsState)``; resume rebuilds every share from the audit log through the plug-in's own
``rebuild`` (pitstop/resume.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .plugin import PluginState

S = TypeVar("S", bound=PluginState)


@dataclass(frozen=True)
class EarlierAttempts:
    """What the earlier attempts of a resumed run leave it: when the run first started (its window policy,
    e.g. a schedule's cutoff, is that start's), and whether a window was opened and never closed."""

    started_at: str | None = None
    window_open: bool = False
    opened_at: str | None = None


@dataclass
class RunState:
    earlier: EarlierAttempts | None = None  # set when the run is resumed
    window_started: tuple[float, float] | None = None  # (window start, this attempt's start), epoch seconds
    failed_checks: list[str] = field(default_factory=list)  # every failed check, for the on-call alert
    report: Any = None  # what the report writer returned
    _plugins: dict[type[PluginState], PluginState] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, cls: type[S]) -> S:
        """The run's instance of plug-in state ``cls`` (created empty on first use)."""
        with self._lock:
            st = self._plugins.get(cls)
            if st is None:
                st = self._plugins[cls] = cls()
            assert isinstance(st, cls)
            return st
