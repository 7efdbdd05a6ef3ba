"""Folds the audit log of a run into the report document (schema: docs/reports.md).

Nothing here reads anything but the events, so the report says exactly what the log recorded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..cleanup.report import cleanup_section
from .in_window import in_window
from .sections import follow_ups, metrics, post_maintenance

SCHEMA_VERSION = 2

DEVIATION_KINDS = ("gate.overridden", "maintenance.safety_net", "maintenance.lift_failed", "backup.verify_failed",
                   "report.failed", "window.overrun", "cleanup.superuser", "blackout.overridden",
                   "window.exceeded", "window.extended", "run.skipped", "run.resumed", "database.unencrypted",
                   "cleanup.partition_refused", "cleanup.warning")


def _t(ts: str | None) -> float | None:
    return datetime.fromisoformat(ts).timestamp() if ts else None


def _secs(a: str | None, b: str | None) -> float | None:
    ta, tb = _t(a), _t(b)
    return round(tb - ta, 3) if ta is not None and tb is not None else None


def _stage_records(events: list[dict[str, Any]], stage_order: list[str],
                   plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stages: dict[str, dict[str, Any]] = {}
    started: dict[str, str] = {}

    def rec(name: str) -> dict[str, Any]:
        return stages.setdefault(name, {"name": name, "status": "skipped", "started_at": None,
                                        "finished_at": None, "duration_s": None, "phases": [], "steps": []})

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
            r["duration_s"] = round((r["duration_s"] or 0) + (d.get("duration_s") or 0), 3)
            if r["status"] != "failed":
                r["status"] = d["status"]
        elif kind == "step.started":
            started[f"{d['stage']}/{d['step']}"] = ev["ts"]
        elif kind in ("step.finished", "step.skipped"):
            step = {"name": d["step"], "uses": d["uses"], "status": d.get("status", "skipped"),
                    "started_at": started.get(f"{d['stage']}/{d['step']}") if kind == "step.finished" else None,
                    "finished_at": ev["ts"], "duration_s": d.get("duration_s"),
                    "summary": d.get("summary") or d.get("reason", ""), "changed": d.get("changed", False),
                    "error": d.get("error"), "error_type": d.get("error_type"), "hosts": d.get("hosts", [])}
            rec(d["stage"])["steps"].append(step)
    for p in plan:  # planned steps the run never reached (e.g. the window after a failed preflight)
        r = rec(p["stage"])
        if not any(st["name"] == p["label"] and st["uses"] == p["uses"] for st in r["steps"]):
            r["steps"].append({"name": p["label"], "uses": p["uses"], "status": "skipped", "started_at": None,
                               "finished_at": None, "duration_s": None, "summary": "not reached: the run stopped "
                               "earlier", "changed": False, "error": None, "error_type": None, "hosts": []})
    ordered = [stages[s] for s in stage_order if s in stages]
    return ordered + [s for n, s in stages.items() if n not in stage_order]


_HOST_TALLY = {"succeeded": "ok", "failed": "failed", "failed_verification": "failed"}


def _hosts(stages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-host view: every host step result, grouped by host, with its exit code and output tails.

    ``ok``/``failed``/``not_run`` count results; a host a rollout never started (max_errors reached)
    is not run, not ok."""
    out: dict[str, dict[str, Any]] = {}
    for s in stages:
        for st in s["steps"]:
            for h in st["hosts"]:
                rec = out.setdefault(h["host"], {"host": h["host"], "ok": 0, "failed": 0, "not_run": 0,
                                                 "results": []})
                rec[_HOST_TALLY.get(h["status"], "not_run")] += 1
                rec["results"].append({"stage": s["name"], "step": st["name"], **_host_detail(h)})
    return out


def _host_detail(h: dict[str, Any]) -> dict[str, Any]:
    data, commands = h.get("data") or {}, h.get("commands") or []
    last = commands[-1] if commands else {}
    return {"status": h["status"], "summary": h.get("summary", ""), "error": h.get("error"),
            "duration_s": h.get("duration_s"), "exit_code": data.get("exit_code", last.get("exit_code")),
            "commands": len(commands), "stdout_tail": last.get("stdout_tail", ""),
            "stderr_tail": data.get("stderr_tail") or last.get("stderr_tail", "")}


def _with_step(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Events of ``kind`` with the stage and step they happened in (the last step.started before)."""
    out, current = [], {"stage": None, "step": None}
    for e in events:
        if e["kind"] == "step.started":
            current = {"stage": e["data"]["stage"], "step": e["data"]["step"]}
        elif e["kind"] == kind:
            out.append({**e["data"], "at": e["ts"], **{k: v for k, v in current.items() if k not in e["data"]}})
    return out


def _window(events: list[dict[str, Any]], start: dict[str, Any]) -> dict[str, Any]:
    """The maintenance window as the site saw it: from the first time maintenance went on (or the window
    opened) to the last time it went off (or closed), across every attempt of the run. A run killed inside
    its window and resumed later was down all along: each attempt's segment and the gaps between attempts
    (the dead process's last event to the next attempt's start) are listed too."""
    s = start["data"]
    opened = [e for e in events if e["kind"] == "window.opened"]
    closed = [e for e in events if e["kind"] == "window.closed"]
    ons = [e["ts"] for e in events if e["kind"] == "maintenance.on"]
    offs = [e["ts"] for e in events if e["kind"] == "maintenance.off"]
    announced = s.get("expected_downtime_s")
    planned = s.get("window") or {}  # the window policy: a schedule's window, or now + announced downtime
    starts = [t for t in [opened[0]["ts"] if opened else None, ons[0] if ons else None] if t]
    ends = [t for t in [closed[-1]["data"].get("ended_at") if closed else None, offs[-1] if offs else None] if t]
    began = min(starts, key=lambda t: _t(t) or 0.0) if starts else None
    ended = max(ends, key=lambda t: _t(t) or 0.0) if ends and closed else None
    attempts = _attempts(events)
    if len(opened) <= 1 and len(attempts) <= 1:
        actual = closed[-1]["data"]["duration_s"] if closed else None  # one attempt: the executor's own timing
    else:
        actual = _secs(began, ended)
    return {
        "planned_start": planned.get("start"),
        "planned_end": planned.get("end"),
        "planned_duration_s": _secs(planned.get("start"), planned.get("end")) or announced,
        "planned_source": planned.get("source"),
        "started_at": began,
        "ended_at": ended,
        "duration_s": actual,
        "downtime_announced_s": announced,
        "downtime_actual_s": actual,
        "overrun_s": round(actual - announced, 3) if actual is not None and announced is not None
        and actual > announced else 0.0,
        "ok": closed[-1]["data"].get("ok") if closed else None,
        "attempts": attempts if len(attempts) > 1 else [],
    }


def _attempts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each attempt's span (its first to its last event) and the gap before it."""
    out: list[dict[str, Any]] = []
    for e in events:
        if e["kind"] in ("run.started", "run.resumed"):
            gap = _secs(out[-1]["last_event_at"], e["ts"]) if out else None
            out.append({"attempt": len(out) + 1, "started_at": e["ts"], "last_event_at": e["ts"], "gap_before_s": gap,
                        "window_opened": False})
        elif out and e["kind"] != "run.abandoned":  # appended later by whoever found the attempt dead
            out[-1]["last_event_at"] = e["ts"]
            if e["kind"] == "window.opened":
                out[-1]["window_opened"] = True
    return out


def _backup(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    created = next((e for e in events if e["kind"] == "backup.created"), None)
    if not created:
        return None
    verified = next((e for e in events if e["kind"] in ("backup.verified", "backup.verify_failed")), None)
    b = created["data"]
    return {"created_at": created["ts"], "location": b.get("location"), "size": b.get("size"),
            "sha256": b.get("sha256"), "tables": b.get("tables"), "rows": b.get("rows"),
            "verified": bool(verified and verified["kind"] == "backup.verified"),
            "verified_at": verified["ts"] if verified else None,
            "verification": verified["data"] if verified else None}


def _checks(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": c["name"], "stage": c.get("stage"), "step": c.get("step"), "host": c.get("host"),
             "status": c["status"], "observed": c.get("observed"), "expected": c.get("expected"),
             "evidence": c.get("evidence", {}), "duration_s": c.get("duration_s"), "at": c["at"]}
            for c in _with_step(events, "check")]


def _verification(stages: list[dict[str, Any]], checks: list[dict[str, Any]]) -> dict[str, Any]:
    post = next((s for s in stages if s["name"] == "post-verification"), None)
    mine = [c for c in checks if c["stage"] == "post-verification"]
    failed = [c for c in mine if c["status"] == "fail"]
    if post is None or not post["steps"] or all(st["status"] == "skipped" for st in post["steps"]):
        status = "not run"
    else:
        status = "failed" if failed or post["status"] == "failed" else "passed"
    return {"status": status, "checks": len(mine), "failed": [
        {"name": c["name"], "step": c["step"], "host": c["host"], "observed": c["observed"],
         "expected": c["expected"], "differences": (c["evidence"] or {}).get("differences")} for c in failed]}


def _retries(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every transient fault that was retried (S3, SSH, PostgreSQL, notification channels)."""
    out = []
    for e in events:
        if e["kind"] != "retry":
            continue
        d = dict(e["data"])
        row = {"at": e["ts"], "what": d.pop("what", "?"), "attempt": d.pop("attempt", None),
               "error": d.pop("error", None), "stage": d.pop("stage", None), "step": d.pop("step", None)}
        row["detail"] = ", ".join(f"{k}={v}" for k, v in sorted(d.items()) if v is not None)
        out.append(row)
    return out


def build_report(events: list[dict[str, Any]], stage_order: list[str]) -> dict[str, Any]:
    start = next(e for e in events if e["kind"] == "run.started")
    finish = next((e for e in reversed(events) if e["kind"] == "run.finished"), None)
    s = start["data"]
    stages = _stage_records(events, stage_order, s.get("plan", []))
    checks = _checks(events)
    deviations = [{"at": e["ts"], "kind": e["kind"], **e["data"]} for e in events if e["kind"] in DEVIATION_KINDS
                  or (e["kind"] == "notice.lead_time" and e["data"].get("status") in ("warning", "exempt"))]
    window = _window(events, start)
    if window["overrun_s"]:
        deviations.append({"at": window["ended_at"], "kind": "window.overrun",
                           "reason": f"the window took {window['duration_s']}s, {window['overrun_s']}s more than "
                                     f"the {window['downtime_announced_s']}s announced"})
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": s["run_id"],
        "environment": s["environment"],
        "runbook": s["runbook"],
        "trigger": s["trigger"],
        "reason": s.get("reason") or None,
        "dry_run": s.get("dry_run", False),
        "rehearsal": bool((s.get("options") or {}).get("rehearsal")) if isinstance(s.get("options"), dict) else False,
        "provenance": s.get("provenance"),
        "started_at": start["ts"],
        "finished_at": finish["ts"] if finish else None,
        "duration_s": _secs(start["ts"], finish["ts"] if finish else None),
        "status": finish["data"]["status"] if finish else "crashed",
        "failure": finish["data"].get("failure") if finish else None,
        "expected_downtime_s": s.get("expected_downtime_s"),
        "maintenance_window": window,
        "stages": stages,
        "hosts": _hosts(stages),
        "plan": s.get("plan", []),
        "backup": _backup(events),
        "cleanup": cleanup_section(events),
        "metrics": metrics(events, checks),
        "checks": checks,
        "verification": _verification(stages, checks),
        "commands": [{"host": c.get("host"), "argv": c.get("argv", []), "exit_code": c.get("exit_code"),
                      "duration_s": c.get("duration_s"), "stage": c.get("stage"), "step": c.get("step"),
                      "at": c["at"]} for c in _with_step(events, "command")],
        "notifications": [{"event": d["event"], "stage": d.get("stage"), "audience": d.get("audience"),
                           "channel": d["channel"], "kind": d.get("kind"), "recipients": d.get("recipients"),
                           "severity": d.get("severity"), "status": d["status"], "sent_at": d["sent_at"],
                           "attempts": d.get("attempts"), "subject": d.get("subject"), "error": d.get("error")}
                          for d in (e["data"] for e in events if e["kind"] == "notification")],
        "retries": _retries(events),
        "deviations": deviations,
        "audit": {"file": "audit.jsonl", "events": len(events), "first_hash": events[0]["hash"],
                  "last_hash": events[-1]["hash"]},
    }
    report["in_window"] = in_window(report)  # critical path and why each step was inside (docs/window.md)
    report["follow_ups"] = follow_ups(report)
    report["post_maintenance"] = post_maintenance(report) if report["trigger"] == "emergency" else None
    return report
