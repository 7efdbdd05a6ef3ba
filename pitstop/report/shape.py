"""Reading odd audit data without falling over: the report builder's defensive vocabulary.

An audit log is written by pitstop, but a run can be killed after any event, a step can crash with
any payload, and a log can be damaged. The builder reads events through these helpers so a value of
the wrong type becomes "unknown" (None, an empty list, a string) instead of an exception, and a part
of the report that still cannot be built is left at its empty value with a note saying why
(:class:`Faults`). The report's shape — every top-level key and its type — is the same whatever the
log held (:func:`empty_report`), so the renderers and the console always find what they read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")
MAX_NOTES = 20  # a report lists at most this many problems (the audit log holds the rest)


def error_text(exc: BaseException, limit: int = 300) -> str:
    """``ErrorClass: first line of the message`` (no traceback), cut to ``limit`` characters."""
    try:
        lines = str(exc).strip().splitlines()
    except Exception:  # noqa: BLE001 - an exception whose __str__ fails
        lines = []
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__


def ts_seconds(ts: Any) -> float | None:
    """Epoch seconds of an ISO timestamp, None for anything else."""
    if not isinstance(ts, str) or not ts:
        return None
    try:
        return datetime.fromisoformat(ts).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def num(v: Any) -> int | float | None:
    """A finite int or float (not a bool), else None."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def text(v: Any) -> str | None:
    """A string as is; None stays None; anything else as its str() (a name that is a list still shows)."""
    if v is None or isinstance(v, str):
        return v
    try:
        return str(v)
    except Exception:  # noqa: BLE001
        return "?"


def mapping(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def items(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def dicts(v: Any) -> list[dict[str, Any]]:
    return [x for x in items(v) if isinstance(x, dict)]


def normalize(events: Any) -> list[dict[str, Any]]:
    """Events as the builder reads them: a string ``kind``, a ``data`` dict, ``ts`` a timestamp or None."""
    out = []
    for e in items(events):
        if not isinstance(e, dict) or not isinstance(e.get("kind"), str):
            continue
        ts = e.get("ts") if ts_seconds(e.get("ts")) is not None else None
        out.append({**e, "ts": ts, "data": mapping(e.get("data")),
                    "hash": e.get("hash") if isinstance(e.get("hash"), str) else None})
    return out


class Faults:
    """Problems met while building or rendering, named in the report (``render_errors``)."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.dropped = 0

    def note(self, what: str, exc: BaseException) -> None:
        if len(self.notes) < MAX_NOTES:
            self.notes.append(f"{what} ({error_text(exc)})")
        else:
            self.dropped += 1

    def section(self, name: str, build: Callable[[], T], default: T) -> T:
        """``build()``, or ``default`` with a note when it raises."""
        try:
            return build()
        except Exception as exc:  # noqa: BLE001 - one bad part never costs the rest of the report
            self.note(f"the {name} section could not be built from the audit log; it is left empty", exc)
            return default

    def each(self, events: list[dict[str, Any]], fold: Callable[[dict[str, Any]], None], what: str) -> None:
        """``fold`` every event; an event that cannot be folded is skipped with a note."""
        for e in events:
            try:
                fold(e)
            except Exception as exc:  # noqa: BLE001
                self.note(f"{what}: event {text(e.get('seq')) or '?'} ({e['kind']}) could not be read and "
                          "was skipped", exc)

    def listed(self) -> list[str]:
        return self.notes + ([f"... and {self.dropped} more"] if self.dropped else [])


def empty_window() -> dict[str, Any]:
    return {"planned_start": None, "planned_end": None, "planned_duration_s": None, "planned_source": None,
            "started_at": None, "ended_at": None, "duration_s": None, "downtime_announced_s": None,
            "downtime_actual_s": None, "overrun_s": 0.0, "ok": None, "attempts": [], "needed": None,
            "not_needed_why": None}


def empty_cleanup() -> dict[str, Any]:
    return {"tables": {}, "rows_purged": 0, "rules": [], "partitions_dropped": [], "partitions_refused": [],
            "foreign_keys": [], "warnings": [], "archives": [], "max_lock_wait_caused_ms": None,
            "longest_batch_ms": None, "backoffs": 0, "vacuum": [], "reindexed": [], "rewritten": [],
            "invalid_indexes": [], "superuser": False}


def empty_metrics() -> dict[str, Any]:
    return {"before": {"tables": {}, "disk": {}}, "after": {"tables": {}, "disk": {}}, "table_rows": [],
            "disk_rows": []}


def empty_verification() -> dict[str, Any]:
    return {"status": "unknown", "checks": 0, "failed": []}


def empty_in_window() -> dict[str, Any]:
    return {"critical_path": [], "critical_path_s": 0.0, "steps": []}


SECTION_DEFAULTS: dict[str, Callable[[], Any]] = {
    "provenance": lambda: None, "failure": lambda: None, "expected_downtime_s": lambda: None,
    "maintenance_window": empty_window, "stages": list, "hosts": dict, "plan": list, "backup": lambda: None,
    "cleanup": empty_cleanup, "metrics": empty_metrics, "checks": list, "verification": empty_verification,
    "commands": list, "notifications": list, "retries": list, "deviations": list,
    "audit": lambda: {"file": "audit.jsonl", "events": 0, "first_hash": None, "last_hash": None},
    "interrupted": lambda: None, "in_window": empty_in_window, "follow_ups": list, "post_maintenance": lambda: None,
    "render_errors": list, "approval": lambda: None,
}


def empty_report(schema_version: int) -> dict[str, Any]:
    """Every key a report has, at its empty value: what renderers and the console may rely on."""
    head: dict[str, Any] = {"schema_version": schema_version, "run_id": "", "environment": "", "runbook": "",
                            "trigger": "", "reason": None, "dry_run": False, "rehearsal": False,
                            "started_at": None, "finished_at": None, "duration_s": None, "last_event_at": None,
                            "status": "unknown"}
    return {**head, **{k: make() for k, make in SECTION_DEFAULTS.items()}}


def failure(v: Any) -> dict[str, Any] | None:
    """The run's failure record with the keys readers use (stage, step, error, error_type) always present."""
    if not isinstance(v, dict):
        return None
    return {"stage": None, "step": None, "error": None, "error_type": None, **v}
