"""Every run folder of an environment and the state it is in, for ``pitstop report list``.

An auditor's list hides nothing: a folder is listed whether or not it has a report. Its state comes
from what the folder holds, read defensively (a damaged folder is listed as such, never skipped):

* ``succeeded`` / ``failed`` / ``failed_verification`` / ``skipped`` / ``not-approved``: the run's last attempt ended
  (its ``run.finished``), marked ``resumed`` when an attempt was resumed after a crash (a resume that
  only wrote the report of a run killed before its seal is not one), ``rehearsal``
  for a rehearsal, and ``no manifest`` when the log records the end but the folder was never sealed
  (killed before its report was written, or the report removed: ``report verify`` says TAMPERED);
* ``running``: its last attempt has not ended and it holds the environment lock now;
* ``abandoned``: its last attempt has not ended and the lock is free or held by another run (the
  process died: ``pitstop resume RUN_ID --env E`` finishes it);
* ``unfinished``: its last attempt has not ended and the database (which holds the lock) cannot be
  asked;
* ``empty``: a folder without an audit log (nothing of a run was recorded).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .fallback import readable_events
from .writer import MANIFEST

OPEN = "open"  # last attempt not ended: running, abandoned or unfinished once the lock is known


@dataclass
class RunRow:
    run_id: str
    run_dir: str
    status: str
    runbook: str = ""
    trigger: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    resumed: bool = False
    rehearsal: bool = False
    sealed: bool = False
    report: bool = False
    ended: bool = False  # the last attempt's run.finished is recorded

    def marks(self) -> list[str]:
        return [m for m, on in (("resumed", self.resumed), ("rehearsal", self.rehearsal),
                                ("no manifest", self.ended and not self.sealed)) if on]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "marks": self.marks()}


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _from_report(row: RunRow, path: Path) -> bool:
    """Fill ``row`` from a sealed run's report.json (no need to read its audit log); False if unreadable."""
    try:
        r = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(r, dict) or not isinstance(r.get("status"), str) or r["status"] == "crashed":
        return False
    raw = r.get("deviations")
    deviations: list[Any] = raw if isinstance(raw, list) else []
    row.status, row.runbook, row.trigger = r["status"], _str(r.get("runbook")), _str(r.get("trigger"))
    row.started_at, row.finished_at = r.get("started_at"), r.get("finished_at")
    row.resumed = any(isinstance(d, dict) and d.get("kind") == "run.resumed" and not d.get("report_only")
                      for d in deviations)
    row.rehearsal = bool(r.get("rehearsal"))
    row.ended = True
    return True


def _from_log(row: RunRow, audit: Path) -> None:
    events = [e for e in readable_events(audit)  # a report-only resume is not an attempt
              if not (e["kind"] == "run.resumed" and e["data"].get("report_only"))]
    start = next((e for e in events if e["kind"] == "run.started"), None)
    s = start["data"] if start else {}
    attempts = [i for i, e in enumerate(events) if e["kind"] in ("run.started", "run.resumed")]
    finish = next((e for e in reversed(events) if e["kind"] == "run.finished"), None)
    ended = bool(attempts) and any(e["kind"] == "run.finished" for e in events[attempts[-1]:])
    row.runbook, row.trigger = _str(s.get("runbook")), _str(s.get("trigger"))
    row.started_at = start.get("ts") if start else (events[0].get("ts") if events else None)
    row.resumed = any(e["kind"] == "run.resumed" for e in events)
    options = s.get("options")
    row.rehearsal = bool(options.get("rehearsal")) if isinstance(options, dict) else False
    if ended and finish is not None:
        row.ended = True
        row.status = _str(finish["data"].get("status")) or "unknown"
        row.finished_at = finish.get("ts")
    else:
        row.status = OPEN


def read_run(run_dir: Path) -> RunRow:
    row = RunRow(run_id=run_dir.name, run_dir=str(run_dir), status="empty")
    row.sealed = (run_dir / MANIFEST).is_file()
    row.report = (run_dir / "report.json").is_file()
    if row.sealed and row.report and _from_report(row, run_dir / "report.json"):
        return row
    audit = run_dir / "audit.jsonl"
    if audit.is_file():
        _from_log(row, audit)
    return row


def list_runs(root: Path) -> list[RunRow]:
    """Every folder under ``root``, newest first (run ids start with their UTC start time)."""
    if not root.is_dir():
        return []
    return [read_run(d) for d in sorted((p for p in root.iterdir() if p.is_dir() and not p.is_symlink()),
                                        key=lambda p: p.name, reverse=True)]


def settle_open(rows: list[RunRow], holder: str | None, known: bool) -> None:
    """Name the state of runs whose last attempt never ended, from the environment lock's holder."""
    for row in rows:
        if row.status == OPEN:
            row.status = "running" if known and holder == row.run_id else "abandoned" if known else "unfinished"
