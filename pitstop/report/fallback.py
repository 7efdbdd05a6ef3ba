"""The report of last resort: whatever the audit log holds, a run folder gets its three report files.

The builder and the templates expect the events a healthy run writes. A run killed at any point, a
step that crashed with an odd payload, or a line the disk cut short must still leave report.json,
report.md and report.html, sealed by the manifest. This module gives the writer three guarantees:

* :func:`readable_events` reads every line that parses as an event and skips the rest (the chain
  check in ``pitstop report verify`` is what reports the damage; the report shows what is readable);
* :func:`build` returns the full report, or, when the builder fails, a minimal one from the facts
  that survive (run id, environment, status, chain head) with a ``render_errors`` entry saying why;
* :func:`render` is the minimal rendering of one format when its template failed.

Nothing here raises: it is the path taken when something already went wrong.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from .builder import SCHEMA_VERSION, build_report


def readable_events(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and isinstance(ev.get("kind"), str):
            ev["data"] = ev["data"] if isinstance(ev.get("data"), dict) else {}
            events.append(ev)
    return events


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def minimal(events: list[dict[str, Any]], why: str) -> dict[str, Any]:
    """The facts every report must carry, read defensively from whatever events exist."""
    start = next((e for e in events if e.get("kind") == "run.started"), None)
    finish = next((e for e in reversed(events) if e.get("kind") == "run.finished"), None)
    s = start["data"] if start else {}
    f = finish["data"] if finish else {}
    status = f.get("status") if isinstance(f.get("status"), str) else ("unfinished" if start else "unknown")
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": str(s.get("run_id") or ""),
        "environment": str(s.get("environment") or ""),
        "runbook": str(s.get("runbook") or ""),
        "trigger": str(s.get("trigger") or ""),
        "started_at": start.get("ts") if start else None,
        "finished_at": finish.get("ts") if finish else None,
        "status": status,
        "failure": f.get("failure") if isinstance(f.get("failure"), dict) else None,
        "minimal": True,
        "render_errors": [why],
        "audit": {"file": "audit.jsonl", "events": len(events),
                  "first_hash": events[0].get("hash") if events else None,
                  "last_hash": events[-1].get("hash") if events else None},
    }


def build(events: list[dict[str, Any]], stage_order: list[str]) -> dict[str, Any]:
    try:
        report = build_report(events, stage_order)
        json.dumps(report, default=str)  # the JSON rendering must be possible (no cycles, no NaN keys)
        return report
    except Exception as exc:  # noqa: BLE001 - any builder fault: the minimal report instead
        return minimal(events, f"the full report could not be built from the audit log ({_error(exc)})")


def _facts(report: dict[str, Any]) -> list[tuple[str, str]]:
    raw = report.get("audit")
    audit: dict[str, Any] = raw if isinstance(raw, dict) else {}
    keys = ("run_id", "environment", "runbook", "trigger", "status", "started_at", "finished_at")
    rows = [(k, str(report.get(k) if report.get(k) is not None else "—")) for k in keys]
    rows.append(("audit events", str(audit.get("events", "—"))))
    rows.append(("audit chain head", str(audit.get("last_hash", "—"))))
    failure = report.get("failure")
    if isinstance(failure, dict):
        rows.append(("failure", "; ".join(f"{k}: {v}" for k, v in failure.items())[:500]))
    return rows


def render(name: str, report: Any, exc: BaseException) -> str:
    """A minimal ``name`` (report.json/md/html) saying what could not be rendered, and why."""
    report = report if isinstance(report, dict) else {}
    why = f"{name} could not be rendered in full ({_error(exc)}); the audit log (audit.jsonl) holds every event"
    try:
        facts = _facts(report)
    except Exception:  # noqa: BLE001
        facts = []
    if name.endswith(".json"):
        body: dict[str, Any] = dict(facts)
        body.update({"minimal": True, "render_errors": [why]})
        return json.dumps(body, indent=2, default=str) + "\n"
    if name.endswith(".md"):
        lines = ["# Maintenance report (minimal)", "", f"> {why}", "", "| field | value |", "|---|---|"]
        lines += [f"| {k} | {v.replace('|', '/')} |" for k, v in facts]
        return "\n".join(lines) + "\n"
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Maintenance report (minimal)</title></head>"
            f"<body><h1>Maintenance report (minimal)</h1><p><strong>{html.escape(why)}</strong></p>"
            f"<table>{rows}</table></body></html>\n")
