"""Expected downtime of a window: p90 of history when there is enough, else config.

History is the in-window duration (``maintenance_window.duration_s``) recorded in the ``report.json``
of the last runs of the same runbook on the same environment. With fewer than
``notifications.notices.history_min_runs`` such runs, the figure comes from config: the schedule's
``expected_downtime``, else the runbook's, else ``window.expected_downtime``. Notices say which.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel

from ..config import EnvironmentConfig, ScheduleSpec
from ..history import p90, recent_reports


class ExpectedDowntime(BaseModel):
    seconds: float
    source: Literal["history", "config", "operator"]
    runs: int = 0

    @property
    def source_text(self) -> str:
        if self.source == "history":
            return f"p90 of the last {self.runs} runs"
        if self.source == "operator":
            return "announced by the on-call engineer"
        return "planned estimate"


def history(cfg: EnvironmentConfig, runbook: str) -> list[float]:
    """In-window durations of the latest runs of ``runbook`` on this environment, newest first."""
    def window_s(r: dict[str, Any]) -> Any:
        return (r.get("maintenance_window") or {}).get("duration_s")

    rows = recent_reports(cfg, runbook, cfg.notifications.notices.history_runs, status=None,
                          keep=lambda r: window_s(r) is not None)
    return [float(window_s(r)) for r in rows]


def _configured(cfg: EnvironmentConfig, runbook: str, spec: ScheduleSpec | None,
                runbook_default: timedelta | None) -> float:
    if spec is not None and spec.expected_downtime is not None:
        return spec.expected_downtime.total_seconds()
    if runbook_default is not None:
        return runbook_default.total_seconds()
    figure = _runbook_downtime(runbook)
    return figure if figure is not None else cfg.window.expected_downtime.total_seconds()


def _runbook_downtime(runbook: str) -> float | None:
    """A runbook's own ``expected_downtime`` (None: not set, or the runbook cannot be read). Read for a figure
    only, once per version of the file: the feed asks at every run event for every schedule's runbook."""
    from ..runbook import find_runbook

    try:
        path = find_runbook(runbook).resolve()
        st = path.stat()
    except OSError:
        return None
    return _downtime_of(str(path), st.st_ino, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _downtime_of(path: str, _ino: int, _mtime_ns: int, _size: int) -> float | None:
    try:
        from ..runbook import load_runbook

        rb = load_runbook(path, announce=False)
    except Exception:  # noqa: BLE001 - a runbook that cannot be read falls back to the environment default
        return None
    return rb.expected_downtime.total_seconds() if rb.expected_downtime is not None else None


def expected_downtime(cfg: EnvironmentConfig, runbook: str, spec: ScheduleSpec | None = None,
                      runbook_default: timedelta | None = None) -> ExpectedDowntime:
    past = history(cfg, runbook)
    if len(past) >= cfg.notifications.notices.history_min_runs:
        return ExpectedDowntime(seconds=p90(past), source="history", runs=len(past))
    return ExpectedDowntime(seconds=_configured(cfg, runbook, spec, runbook_default), source="config")
