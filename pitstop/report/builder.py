"""Folds the audit log of a run into the report document (schema: docs/reports.md).

Nothing here reads anything but the events, so the report says exactly what the log recorded. It
reads them defensively (pitstop.report.shape): a run killed after any event, a step that crashed
with an odd payload or a damaged line still gives a report of the same shape, with what could not
be read named in ``render_errors``; the builder itself never raises.
"""

from __future__ import annotations

from typing import Any

from ..registry import report_sections
from .approval import approval_section
from .in_window import in_window
from .sections import follow_ups, metrics, post_maintenance
from .shape import (
    SECTION_DEFAULTS,
    Faults,
    dicts,
    empty_report,
    failure,
    items,
    mapping,
    normalize,
    num,
    text,
    ts_seconds,
)

SCHEMA_VERSION = 2

DEVIATION_KINDS = ("gate.overridden", "maintenance.safety_net", "maintenance.lift_failed", "backup.verify_failed",
                   "report.failed", "window.overrun", "cleanup.superuser", "blackout.overridden",
                   "window.exceeded", "window.extended", "run.skipped", "run.resumed", "database.unencrypted",
                   "cleanup.partition_refused", "cleanup.warning", "plan.deviation",
                   "approval.skipped")


def _secs(a: Any, b: Any) -> float | None:
    ta, tb = ts_seconds(a), ts_seconds(b)
    return round(tb - ta, 3) if ta is not None and tb is not None else None


def _step_key(d: dict[str, Any]) -> str:
    return f"{text(d.get('stage'))}/{text(d.get('step'))}"


def _stage_records(events: list[dict[str, Any]], stage_order: list[str], plan: list[dict[str, Any]],
                   faults: Faults) -> list[dict[str, Any]]:
    stages: dict[str, dict[str, Any]] = {}
    started: dict[str, str | None] = {}
    running: dict[str, dict[str, Any]] = {}  # steps started and not (yet) finished, in start order

    def rec(name: Any) -> dict[str, Any]:
        key = text(name) or "?"
        return stages.setdefault(key, {"name": key, "status": "skipped", "started_at": None,
                                       "finished_at": None, "duration_s": None, "phases": [], "steps": []})

    def fold(ev: dict[str, Any]) -> None:
        d, kind = ev["data"], ev["kind"]
        if kind == "stage.started":
            r = rec(d.get("stage"))
            r["started_at"] = r["started_at"] or ev["ts"]
            phase = text(d.get("phase"))
            if phase is not None and phase not in r["phases"]:
                r["phases"].append(phase)
        elif kind == "stage.finished":
            r = rec(d.get("stage"))
            r["finished_at"] = ev["ts"]
            r["duration_s"] = round((r["duration_s"] or 0) + (num(d.get("duration_s")) or 0), 3)
            if r["status"] != "failed":
                r["status"] = text(d.get("status")) or "unknown"
        elif kind == "step.started":
            started[_step_key(d)] = ev["ts"]
            running[_step_key(d)] = {**d, "ts": ev["ts"]}
        elif kind in ("step.finished", "step.skipped"):
            step = {"name": text(d.get("step")), "uses": text(d.get("uses")),
                    "status": text(d.get("status", "skipped")) or "unknown",
                    "started_at": started.get(_step_key(d)) if kind == "step.finished" else None,
                    "finished_at": ev["ts"], "duration_s": num(d.get("duration_s")),
                    "summary": text(d.get("summary") or d.get("reason", "")), "changed": d.get("changed", False),
                    "error": d.get("error"), "error_type": d.get("error_type"), "hosts": dicts(d.get("hosts"))}
            rec(d.get("stage"))["steps"].append(step)
            running.pop(_step_key(d), None)

    faults.each(events, fold, "stages")
    for d in running.values():  # the log stops inside these steps: the run was killed while they ran
        rec(d.get("stage"))["steps"].append({
            "name": text(d.get("step")), "uses": text(d.get("uses")), "status": "interrupted", "started_at": d["ts"],
            "finished_at": None, "duration_s": None, "summary": "started; no result recorded (the run stopped "
            "during this step)", "changed": None, "error": None, "error_type": None, "hosts": []})
    for r in stages.values():
        if r["started_at"] and not r["finished_at"]:
            r["status"] = "interrupted"
    for p in plan:  # planned steps the run never reached (e.g. the window after a failed preflight)
        r = rec(p.get("stage"))
        if not any(st["name"] == text(p.get("label")) and st["uses"] == text(p.get("uses")) for st in r["steps"]):
            r["steps"].append({"name": text(p.get("label")), "uses": text(p.get("uses")), "status": "skipped",
                               "started_at": None, "finished_at": None, "duration_s": None,
                               "summary": "not reached: the run stopped earlier", "changed": False, "error": None,
                               "error_type": None, "hosts": []})
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
                name = text(h.get("host")) or "?"
                rec = out.setdefault(name, {"host": name, "ok": 0, "failed": 0, "not_run": 0, "results": []})
                rec[_HOST_TALLY.get(text(h.get("status")) or "", "not_run")] += 1
                rec["results"].append({"stage": s["name"], "step": st["name"], **_host_detail(h)})
    return out


def _host_detail(h: dict[str, Any]) -> dict[str, Any]:
    data, commands = mapping(h.get("data")), dicts(h.get("commands"))
    last = commands[-1] if commands else {}
    return {"status": text(h.get("status")), "summary": h.get("summary", ""), "error": h.get("error"),
            "duration_s": h.get("duration_s"), "exit_code": data.get("exit_code", last.get("exit_code")),
            "commands": len(commands), "stdout_tail": last.get("stdout_tail", ""),
            "stderr_tail": data.get("stderr_tail") or last.get("stderr_tail", "")}


def _with_step(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Events of ``kind`` with the stage and step they happened in (the last step.started before)."""
    out: list[dict[str, Any]] = []
    current: dict[str, Any] = {"stage": None, "step": None}
    for e in events:
        if e["kind"] == "step.started":
            current = {"stage": text(e["data"].get("stage")), "step": text(e["data"].get("step"))}
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
    ons = [e["ts"] for e in events if e["kind"] == "maintenance.on" and e["ts"]]
    offs = [e["ts"] for e in events if e["kind"] == "maintenance.off" and e["ts"]]
    announced = num(s.get("expected_downtime_s"))
    planned = mapping(s.get("window"))  # the window policy: a schedule's window, or now + announced downtime
    last_close = closed[-1]["data"] if closed else {}
    starts = [t for t in [opened[0]["ts"] if opened else None, ons[0] if ons else None] if t]
    ends = [t for t in [last_close.get("ended_at"), offs[-1] if offs else None] if ts_seconds(t) is not None]
    began = min(starts, key=lambda t: ts_seconds(t) or 0.0) if starts else None
    ended = max(ends, key=lambda t: ts_seconds(t) or 0.0) if ends and closed else None
    attempts = _attempts(events)
    if len(opened) <= 1 and len(attempts) <= 1:
        actual = num(last_close.get("duration_s"))  # one attempt: the executor's own timing
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
        "ok": last_close.get("ok") if closed else None,
        "attempts": attempts if len(attempts) > 1 else [],
        **_needed(events),
    }


def _needed(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether the run needed the window (pitstop/need.py): ``needed`` False when it was never opened because no
    exclusive step had work; None for a log without a decision."""
    decided = next((e["data"] for e in events if e["kind"] == "window.decision"), None)
    skipped = next((e["data"] for e in events if e["kind"] == "window.not_needed"), None)
    if skipped is not None:
        return {"needed": False, "not_needed_why": text(skipped.get("why"))}
    if decided is None:
        return {"needed": None, "not_needed_why": None}
    if decided.get("window_needed") is False:  # decided at the start; the window was not reached (yet)
        return {"needed": False, "not_needed_why": text(decided.get("window_why"))}
    return {"needed": True, "not_needed_why": None}


def _report_only(e: dict[str, Any]) -> bool:
    """A ``run.resumed`` that only wrote the report of a run killed before its seal: not an attempt."""
    return e["kind"] == "run.resumed" and bool(e["data"].get("report_only"))


def _attempts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each attempt's span (its first to its last event) and the gap before it."""
    out: list[dict[str, Any]] = []
    for e in events:
        if e["kind"] in ("run.started", "run.resumed") and not _report_only(e):
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
    return [{"name": text(c.get("name")), "stage": text(c.get("stage")), "step": text(c.get("step")),
             "host": text(c.get("host")), "status": text(c.get("status")), "observed": c.get("observed"),
             "expected": c.get("expected"), "evidence": mapping(c.get("evidence")), "duration_s": c.get("duration_s"),
             "at": c.get("at")} for c in _with_step(events, "check")]


def _verification(stages: list[dict[str, Any]], checks: list[dict[str, Any]]) -> dict[str, Any]:
    post = next((s for s in stages if s["name"] == "post-verification"), None)
    mine = [c for c in checks if c["stage"] == "post-verification"]
    failed = [c for c in mine if c["status"] == "fail"]
    if post is None or not post["steps"] or all(st["status"] == "skipped" for st in post["steps"]):
        status = "not run"
    elif post["status"] == "interrupted":
        status = "interrupted"
    else:
        status = "failed" if failed or post["status"] == "failed" else "passed"
    return {"status": status, "checks": len(mine), "failed": [
        {"name": c["name"], "step": c["step"], "host": c["host"], "observed": c["observed"],
         "expected": c["expected"], "differences": c["evidence"].get("differences")} for c in failed]}


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


def _deviations(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"at": e["ts"], **{k: v for k, v in e["data"].items() if k != "provenance"}, "kind": e["kind"]}
            for e in events if e["kind"] in DEVIATION_KINDS
            or (e["kind"] == "notice.lead_time" and e["data"].get("status") in ("warning", "exempt"))]


def _commands(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"host": c.get("host"), "argv": [text(a) for a in items(c.get("argv"))], "exit_code": c.get("exit_code"),
             "duration_s": c.get("duration_s"), "stage": c.get("stage"), "step": c.get("step"), "at": c.get("at")}
            for c in _with_step(events, "command")]


def _notifications(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"event": text(d.get("event")), "stage": d.get("stage"), "phase": d.get("phase"),
             "audience": d.get("audience"),
             "channel": text(d.get("channel")), "kind": d.get("kind"), "recipients": d.get("recipients"),
             "severity": d.get("severity"), "status": text(d.get("status")), "sent_at": d.get("sent_at"),
             "attempts": d.get("attempts"), "subject": d.get("subject"), "error": d.get("error"),
             "receipt": d.get("receipt") if isinstance(d.get("receipt"), dict) else None}
            for d in (e["data"] for e in events if e["kind"] == "notification")]


def _interrupted(events: list[dict[str, Any]], stages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Where a run without ``run.finished`` stopped: its last event and the steps it was in."""
    if not events:
        return None
    last = events[-1]
    steps = [{"stage": s["name"], "step": st["name"], "started_at": st["started_at"]}
             for s in stages for st in s["steps"] if st["status"] == "interrupted"]
    return {"last_event": last["kind"], "at": last["ts"], "steps": steps}


def build_report(events: list[dict[str, Any]], stage_order: list[str], run_id: str = "") -> dict[str, Any]:
    """The report of ``events`` (``run_id``: the folder's name, used when no event names the run)."""
    events = normalize(events)
    faults = Faults()
    start = next((e for e in events if e["kind"] == "run.started"), None) or {"ts": None, "data": {}}
    finish = next((e for e in reversed(events) if e["kind"] == "run.finished"), None)
    s = start["data"]
    report = empty_report(SCHEMA_VERSION)
    options = s.get("options")
    report.update({
        "run_id": text(s.get("run_id")) or run_id,
        "environment": text(s.get("environment")) or "",
        "runbook": text(s.get("runbook")) or "",
        "trigger": text(s.get("trigger")) or "",
        "reason": text(s.get("reason")) or None,
        "dry_run": s.get("dry_run", False),
        "rehearsal": bool(options.get("rehearsal")) if isinstance(options, dict) else False,
        "provenance": s.get("provenance"),
        "started_at": start["ts"],
        "finished_at": finish["ts"] if finish else None,
        "duration_s": _secs(start["ts"], finish["ts"] if finish else None),
        "last_event_at": next((e["ts"] for e in reversed(events) if e["ts"]), None),
        "status": (text(finish["data"].get("status")) or "unknown") if finish else "crashed",
        "failure": failure(finish["data"].get("failure")) if finish else None,
        "expected_downtime_s": num(s.get("expected_downtime_s")),
        "plan": dicts(s.get("plan")),
    })

    def part(name: str, build: Any) -> None:
        report[name] = faults.section(name.replace("_", " "), build, SECTION_DEFAULTS.get(name, dict)())

    part("approval", lambda: approval_section(events))
    part("stages", lambda: _stage_records(events, stage_order, report["plan"], faults))
    part("hosts", lambda: _hosts(report["stages"]))
    part("backup", lambda: _backup(events))
    for name, section in report_sections().items():  # the plug-ins' own sections, folded from the same events
        part(name, lambda section=section: section(events))
    part("checks", lambda: _checks(events))
    part("metrics", lambda: metrics(events, report["checks"]))
    part("verification", lambda: _verification(report["stages"], report["checks"]))
    part("commands", lambda: _commands(events))
    part("notifications", lambda: _notifications(events))
    part("retries", lambda: _retries(events))
    part("deviations", lambda: _deviations(events))
    part("maintenance_window", lambda: _window(events, start))
    w = report["maintenance_window"]
    if w["overrun_s"]:
        report["deviations"].append({"at": w["ended_at"], "kind": "window.overrun",
                                     "reason": f"the window took {w['duration_s']}s, {w['overrun_s']}s more than "
                                               f"the {w['downtime_announced_s']}s announced"})
    if not finish:
        part("interrupted", lambda: _interrupted(events, report["stages"]))
    hashes = [e["hash"] for e in events]
    report["audit"] = {"file": "audit.jsonl", "events": len(events), "first_hash": hashes[0] if hashes else None,
                       "last_hash": hashes[-1] if hashes else None}
    part("in_window", lambda: in_window(report))  # critical path and why each step was inside (docs/window.md)
    part("follow_ups", lambda: follow_ups(report))
    if report["trigger"] == "emergency":
        part("post_maintenance", lambda: post_maintenance(report))
    report["render_errors"] = faults.listed()
    return report
