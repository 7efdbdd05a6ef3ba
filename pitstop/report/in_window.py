"""The report's in-window section: every step that ran inside the maintenance window, why it had to
be there (the plan's ``why``, recorded in ``run.started``), and the critical path measured in this
run — the chain of dependent steps that set the window's length (docs/window.md)."""

from __future__ import annotations

from typing import Any


def _longest(unit: list[dict[str, Any]], took: dict[str, float]) -> tuple[float, list[str]]:
    ids = {p["id"] for p in unit}
    best: dict[str, tuple[float, list[str]]] = {}
    rest = list(unit)
    while rest:  # topological: a step after every dependency inside its unit
        ready = [p for p in rest if all(d in best for d in p.get("after", []) if d in ids)] or rest[:1]
        for p in ready:
            rest.remove(p)
            prev = max((best[d] for d in p.get("after", []) if d in best), key=lambda b: b[0], default=(0.0, []))
            best[p["id"]] = (prev[0] + took.get(p["id"], 0.0), [*prev[1], p["id"]])
    return max(best.values(), key=lambda b: b[0], default=(0.0, []))


def in_window(report: dict[str, Any]) -> dict[str, Any]:
    """``{critical_path, critical_path_s, steps}`` for the steps the plan put inside the window."""
    inside = [p for p in report.get("plan", []) if p.get("phase") == "window" and p.get("id")]
    records = {(s["name"], st["name"]): st for s in report.get("stages", []) for st in s.get("steps", [])}
    took: dict[str, float] = {}
    steps = []
    for p in inside:
        st = records.get((p["stage"], p["label"]), {})
        if st.get("duration_s") is not None and st.get("status") != "skipped":
            took[p["id"]] = float(st["duration_s"])
        steps.append({"id": p["id"], "stage": p["stage"], "step": p["label"], "uses": p["uses"], "why": p["why"],
                      "after": p.get("after", []), "status": st.get("status", "skipped"),
                      "started_at": st.get("started_at"), "finished_at": st.get("finished_at"),
                      "duration_s": st.get("duration_s")})
    total, path = 0.0, []
    units: list[list[dict[str, Any]]] = []
    for p in inside:  # units: consecutive steps of one stage, run one after another
        if units and units[-1][0]["stage"] == p["stage"]:
            units[-1].append(p)
        else:
            units.append([p])
    for unit in units:
        secs, chain = _longest(unit, took)
        total += secs
        path += chain
    on_path = set(path)
    for s in steps:
        s["critical"] = s["id"] in on_path
    by_id = {s["id"]: s for s in steps}
    return {"critical_path": [{"id": i, "stage": by_id[i]["stage"], "step": by_id[i]["step"],
                               "duration_s": by_id[i]["duration_s"]} for i in path],
            "critical_path_s": round(total, 3), "steps": steps}
