"""Folds the audit log of a run into the report document (schema documented in docs/report-schema.md).

Nothing here reads anything but the events, so the report says exactly what the log recorded.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1


def _stage_records(events: list[dict[str, Any]], stage_order: list[str]) -> list[dict[str, Any]]:
    stages: dict[str, dict[str, Any]] = {}

    def rec(name: str) -> dict[str, Any]:
        return stages.setdefault(name, {"name": name, "status": "skipped", "started_at": None,
                                        "finished_at": None, "phases": [], "steps": []})

    for ev in events:
        d, kind = ev["data"], ev["kind"]
        if kind == "stage.started":
            r = rec(d["stage"])
            r["started_at"] = r["started_at"] or ev["ts"]
            if d["phase"] not in r["phases"]:
                r["phases"].append(d["phase"])
        elif kind == "stage.finished":
            r = rec(d["stage"])
            r["finished_at"] = ev["ts"]
            if r["status"] != "failed":
                r["status"] = d["status"]
        elif kind in ("step.finished", "step.skipped"):
            step = {"name": d["step"], "uses": d["uses"],
                    "status": d.get("status", "skipped"), "finished_at": ev["ts"],
                    "duration_s": d.get("duration_s"), "summary": d.get("summary") or d.get("reason", ""),
                    "changed": d.get("changed", False), "error": d.get("error"), "hosts": d.get("hosts", [])}
            r = rec(d["stage"])
            r["steps"].append(step)
    ordered = [stages[s] for s in stage_order if s in stages]
    return ordered + [s for n, s in stages.items() if n not in stage_order]


def build_report(events: list[dict[str, Any]], stage_order: list[str]) -> dict[str, Any]:
    start = next(e for e in events if e["kind"] == "run.started")
    finish = next((e for e in reversed(events) if e["kind"] == "run.finished"), None)
    s = start["data"]
    opened = next((e for e in events if e["kind"] == "window.opened"), None)
    closed = next((e for e in events if e["kind"] == "window.closed"), None)
    backup_ev = next((e for e in events if e["kind"] == "backup.created"), None)
    verified = next((e for e in events if e["kind"] in ("backup.verified", "backup.verify_failed")), None)
    purges = [e["data"] for e in events if e["kind"] == "cleanup.purged"]
    checks = [dict(e["data"], at=e["ts"]) for e in events if e["kind"] == "check"]
    commands = [dict(e["data"], at=e["ts"]) for e in events if e["kind"] == "command"]
    deviations = [{"at": e["ts"], "kind": e["kind"], **e["data"]} for e in events
                  if e["kind"] in ("gate.overridden", "maintenance.safety_net", "maintenance.lift_failed",
                                   "backup.verify_failed")]
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": s["run_id"],
        "environment": s["environment"],
        "runbook": s["runbook"],
        "trigger": s["trigger"],
        "reason": s["reason"] or None,
        "dry_run": s.get("dry_run", False),
        "started_at": start["ts"],
        "finished_at": finish["ts"] if finish else None,
        "status": finish["data"]["status"] if finish else "crashed",
        "failure": finish["data"].get("failure") if finish else None,
        "expected_downtime_s": s.get("expected_downtime_s"),
        "maintenance_window": {
            "started_at": opened["ts"] if opened else None,
            "ended_at": closed["data"]["ended_at"] if closed else None,
            "duration_s": closed["data"]["duration_s"] if closed else None,
        },
        "stages": _stage_records(events, stage_order),
        "plan": s.get("plan", []),
        "backup": None,
        "cleanup": {"tables": {p["table"]: p["deleted"] for p in purges}, "rules": purges},
        "checks": checks,
        "commands": commands,
        "notifications": [{"event": e["data"]["event"], "channel": e["data"]["channel"],
                           "status": e["data"]["status"], "sent_at": e["data"]["sent_at"],
                           "attempts": e["data"].get("attempts"), "error": e["data"].get("error")}
                          for e in events if e["kind"] == "notification"],
        "deviations": deviations,
        "audit": {"events": len(events), "last_hash": events[-1]["hash"]},
    }
    if backup_ev:
        b = backup_ev["data"]
        report["backup"] = {"location": b["location"], "size": b["size"], "sha256": b["sha256"],
                            "tables": b.get("tables"), "rows": b.get("rows"),
                            "verified": bool(verified and verified["kind"] == "backup.verified"),
                            "verification": verified["data"] if verified else None}
    return report
