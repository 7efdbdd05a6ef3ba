"""What a channel, the feed and the notices see of a run: a small typed view, not the executor's RunContext.

:class:`pitstop.context.RunContext` satisfies it; so does anything else with these attributes (tests, a
report-only writer), so the notification layer never imports the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .audit import AuditLog
    from .config import EnvironmentConfig
    from .options import RunOptions
    from .provenance import FlowRunRef
    from .runbook import Runbook


class EventSink(Protocol):
    """Anything that records audit events (a run; what pitstop.pgretry reports its retries to)."""

    def event(self, kind: str, /, **data: Any) -> None: ...


class RunView(EventSink, Protocol):
    run_id: str
    cfg: EnvironmentConfig
    runbook: Runbook
    options: RunOptions
    audit: AuditLog
    flow_run: FlowRunRef | None

    def redact(self, value: Any) -> Any: ...
