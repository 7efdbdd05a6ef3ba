"""The report of last resort: whatever the audit log holds, a run folder gets its three report files.

The builder and the templates expect the events a healthy run writes. A run killed at any point, a
step that crashed with an odd payload, or a line the disk cut short must still leave report.json,
report.md and report.html, sealed by the manifest. This module gives the writer three guarantees:

* :func:`readable_events` reads every line that parses as an event and skips the rest (the chain
  check in ``pitstop report verify`` is what reports the damage; the report shows what is readable);
* :func:`build` returns the full report (the builder skips what it cannot read and says so), or, should
  the builder itself fail, a minimal one from the facts that survive (run id, environment, status,
  chain head) in the same shape, with a ``render_errors`` entry saying why;
* :func:`render` is the minimal rendering of one format when its renderer failed outside any section
  (a failing section alone is replaced by a note: pitstop.report.writer.render_template).

Nothing here raises: it is the path taken when something already went wrong.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from .builder import SCHEMA_VERSION, build_report
from .shape import empty_report, error_text, failure, normalize, text


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


def minimal(events: list[dict[str, Any]], why: str, run_id: str = "") -> dict[str, Any]:
    """The facts every report must carry, read defensively from whatever events exist, in the full
    report's shape (every section empty) so the templates render it like any other."""
    events = normalize(events)
    start = next((e for e in events if e["kind"] == "run.started"), None)
    finish = next((e for e in reversed(events) if e["kind"] == "run.finished"), None)
    s = start["data"] if start else {}
    f = finish["data"] if finish else {}
    report = empty_report(SCHEMA_VERSION)
    report.update({
        "run_id": text(s.get("run_id")) or run_id,
        "environment": text(s.get("environment")) or "",
        "runbook": text(s.get("runbook")) or "",
        "trigger": text(s.get("trigger")) or "",
        "started_at": start["ts"] if start else None,
        "finished_at": finish["ts"] if finish else None,
        "status": (text(f.get("status")) or "unknown") if finish else ("crashed" if start else "unknown"),
        "failure": failure(f.get("failure")),
        "minimal": True,
        "render_errors": [why],
        "audit": {"file": "audit.jsonl", "events": len(events),
                  "first_hash": events[0]["hash"] if events else None,
                  "last_hash": events[-1]["hash"] if events else None},
    })
    return report


def build(events: list[dict[str, Any]], stage_order: list[str], run_id: str = "") -> dict[str, Any]:
    try:
        report = build_report(events, stage_order, run_id)
        json.dumps(report, default=str)  # the JSON rendering must be possible (no cycles)
        return report
    except Exception as exc:  # noqa: BLE001 - any builder fault: the minimal report instead
        try:
            return minimal(events, f"the full report could not be built from the audit log ({error_text(exc)})",
                           run_id)
        except Exception as again:  # noqa: BLE001 - not even the facts: an empty report that says so
            report = empty_report(SCHEMA_VERSION)
            report.update({"run_id": run_id, "minimal": True,
                           "render_errors": [f"the audit log could not be read ({error_text(again)})"]})
            return report


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


def _json(report: dict[str, Any], why: str) -> str:
    """The report's shape with the facts that are plain strings, and why the rest is missing."""
    body = empty_report(SCHEMA_VERSION)
    for k in ("run_id", "environment", "runbook", "trigger", "status", "started_at", "finished_at"):
        if isinstance(report.get(k), str):
            body[k] = report[k]
    audit = report.get("audit")
    if isinstance(audit, dict):
        body["audit"].update({k: v for k, v in audit.items() if isinstance(v, str | int) and k in body["audit"]})
    body.update({"minimal": True, "render_errors": [why]})
    try:
        body["failure"] = json.loads(json.dumps(failure(report.get("failure")), default=str, allow_nan=False))
    except ValueError:
        pass
    return json.dumps(body, indent=2) + "\n"


def render(name: str, report: Any, exc: BaseException) -> str:
    """A minimal ``name`` (report.json/md/html) saying what could not be rendered, and why."""
    report = report if isinstance(report, dict) else {}
    why = f"{name} could not be rendered in full ({error_text(exc)}); the audit log (audit.jsonl) holds every event"
    try:
        facts = _facts(report)
    except Exception:  # noqa: BLE001
        facts = []
    if name.endswith(".json"):
        return _json(report, why)
    if name.endswith(".md"):
        lines = ["# Maintenance report (minimal)", "", f"> {why}", "", "| field | value |", "|---|---|"]
        lines += [f"| {k} | {v.replace('|', '/')} |" for k, v in facts]
        return "\n".join(lines) + "\n"
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Maintenance report (minimal)</title></head>"
            f"<body><h1>Maintenance report (minimal)</h1><p><strong>{html.escape(why)}</strong></p>"
            f"<table>{rows}</table></body></html>\n")
