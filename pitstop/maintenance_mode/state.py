"""Maintenance mode's share of a run's state (``ctx.state.of(MaintenanceState)``), and how a resumed run
rebuilds it from the audit log: the hosts still in maintenance, their dead-man watchers, and since when
the site has shown the maintenance page."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..plugin import Event, PluginState
from .base import MaintenanceRecord
from .deadman import DeadmanHandle


class MaintenanceState(PluginState):
    on: set[str] = Field(default_factory=set)  # hosts this run switched on and not yet off
    record: MaintenanceRecord | None = None  # one per run: every host shows the same run, start and expiry
    deadman: dict[str, DeadmanHandle] = Field(default_factory=dict)  # host -> its armed watcher
    http_done: dict[str, bool] = Field(default_factory=dict)  # http strategy: URL -> last direction sent
    http_renewed: dict[str, str] = Field(default_factory=dict)  # http strategy: URL -> expiry last sent
    down_since: str | None = None  # resumed: the site has shown the maintenance page since then
    lifted_at: str | None = None  # resumed: the last time maintenance went off in an earlier attempt

    def rebuild(self, events: list[Event]) -> None:
        """The hosts an earlier attempt left in maintenance and its dead-man watchers: the resumed run
        cancels them when it lifts maintenance (or replaces them when it switches it on again). Left alone
        they would fire on the old attempt's TTL, possibly in the middle of the resumed run's work, as they
        name the same run id. ``down_since``: the window of the attempt that switched maintenance on for a
        host that is still on (the resumed attempt's window continues it)."""
        opened_at: str | None = None
        window_open = False
        on_since: dict[str, str] = {}
        for ev in events:
            kind, d = ev["kind"], ev["data"]
            host: Any = d.get("host")
            if kind == "window.opened":
                opened_at, window_open = ev["ts"], True
            elif kind == "window.closed":
                window_open = False
            elif kind == "maintenance.on" and host:
                self.on.add(host)
                on_since.setdefault(host, opened_at if window_open and opened_at else ev["ts"])
            elif kind == "maintenance.deadman_armed" and host and d.get("handle"):
                self.deadman[host] = DeadmanHandle.model_validate(d["handle"])
            elif kind == "maintenance.off" and host:
                self.on.discard(host)
                self.deadman.pop(host, None)
                if on_since.pop(host, None) is not None:
                    self.lifted_at = ev["ts"]
        from datetime import datetime

        self.down_since = min(on_since.values(), key=lambda t: datetime.fromisoformat(t).timestamp()) \
            if on_since else None
