"""Derived report sections: before/after metrics, follow-ups and the emergency post-maintenance
report. Each is a pure function of events or of the report being built from them."""

from __future__ import annotations

from typing import Any

BEFORE_STAGES = ("preflight", "pre-backup")
AFTER_STAGES = ("post-verification",)


def metrics(events: list[dict[str, Any]], checks: list[dict[str, Any]]) -> dict[str, Any]:
    """Table sizes, live/dead tuples (``data.snapshot`` events) and disk/inodes (host checks),
    before and after the work."""
    out: dict[str, Any] = {"before": {"tables": {}, "disk": {}}, "after": {"tables": {}, "disk": {}}}
    for e in events:
        if e["kind"] == "data.snapshot" and e["data"].get("label") in ("before", "after"):
            side = out[e["data"]["label"]]
            side["at"] = e["ts"]
            for table, m in (e["data"].get("metrics") or {}).items():
                side["tables"][table] = {**m, "rows": (e["data"].get("counts") or {}).get(table)}
    for c in checks:
        if c["name"] not in ("disk_free", "inodes_free") or not c.get("host"):
            continue
        side = out["before"] if c["stage"] in BEFORE_STAGES else out["after"] if c["stage"] in AFTER_STAGES else None
        if side is None:
            continue
        ev = c.get("evidence") or {}
        rec = side["disk"].setdefault(c["host"], {})
        key = "free_pct" if c["name"] == "disk_free" else "inodes_free_pct"
        rec[key] = ev.get("free_pct")
        rec["path"] = ev.get("path")
    rows = []
    for table in sorted(set(out["before"]["tables"]) | set(out["after"]["tables"])):
        b, a = out["before"]["tables"].get(table, {}), out["after"]["tables"].get(table, {})
        rows.append({"table": table, "rows_before": b.get("rows"), "rows_after": a.get("rows"),
                     "bytes_before": b.get("bytes"), "bytes_after": a.get("bytes"),
                     "dead_before": b.get("dead_tuples"), "dead_after": a.get("dead_tuples")})
    out["table_rows"] = rows
    disk_b, disk_a = out["before"]["disk"], out["after"]["disk"]
    out["disk_rows"] = [{"host": h, "path": (disk_b.get(h) or disk_a.get(h) or {}).get("path"),
                         "free_pct_before": (disk_b.get(h) or {}).get("free_pct"),
                         "free_pct_after": (disk_a.get(h) or {}).get("free_pct")}
                        for h in sorted(set(disk_b) | set(disk_a))]
    return out


def follow_ups(r: dict[str, Any]) -> list[str]:
    """What someone has to do after this run, derived from what went wrong or was overridden."""
    items: list[str] = []
    if r.get("failure"):
        f = r["failure"]
        items.append(f"Investigate the failure of {f.get('stage')} / {f.get('step')}: {f.get('error')}")
    for c in r["verification"]["failed"]:
        where = f" on {c['host']}" if c.get("host") else ""
        items.append(f"Resolve failed verification {c['name']}{where}: observed {c['observed']}, expected "
                     f"{c['expected']}")
    for c in r["checks"]:
        if c["status"] == "warn":
            items.append(f"Review warning from {c['name']}: {c['observed']}")
    for d in r["deviations"]:
        items.append(f"Review deviation {d['kind']}" + (f": {d.get('reason') or d.get('error')}"
                                                        if d.get("reason") or d.get("error") else ""))
    failed_notes = sorted({f"{n['channel']} ({n['event']})" for n in r["notifications"] if n["status"] != "sent"})
    if failed_notes:
        items.append("Notifications not delivered: " + ", ".join(failed_notes))
    if r.get("backup") and not r["backup"]["verified"]:
        items.append("The backup of this run was not verified by a restore: verify it or take a new one")
    stopped = r.get("interrupted")
    if isinstance(stopped, dict):
        items.append(f"The run stopped without finishing (its last event: {stopped.get('last_event')} at "
                     f"{stopped.get('at')}): `pitstop resume {r.get('run_id')} --env {r.get('environment')}` "
                     "finishes it")
    if r["trigger"] == "emergency":
        items.append("Write the root-cause analysis of the cause above and schedule preventive work")
    return items


def post_maintenance(r: dict[str, Any]) -> dict[str, Any]:
    """The emergency post-maintenance report: cause, steps taken, outcome, follow-ups."""
    steps = [{"stage": s["name"], "step": st["name"], "status": st["status"], "summary": st["summary"],
              "at": st["finished_at"]}
             for s in r["stages"] for st in s["steps"] if st["status"] != "skipped"]
    w = r["maintenance_window"]
    outcome = {"succeeded": "Maintenance completed and verified.",
               "failed_verification": "Maintenance completed but post-verification FAILED.",
               "failed": "Maintenance FAILED; maintenance mode was lifted by the always-finally path.",
               }.get(r["status"], f"Run ended with status {r['status']}.")
    if w.get("duration_s") is not None:
        outcome += f" Downtime {w['duration_s']}s (announced {w.get('downtime_announced_s')}s)."
    return {"cause": r.get("reason"), "steps_taken": steps, "outcome": outcome, "status": r["status"],
            "follow_ups": r["follow_ups"]}
