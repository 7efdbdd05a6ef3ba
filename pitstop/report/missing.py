"""A run that ended without its report (the disk refused report.json): what the CLI says instead.

The run itself is over — maintenance lifted, its outcome in the audit log — so the command ends with one
line, not a traceback: the outcome, why the report is missing, where a copy of the report was written
(built from the audit log into a private temporary folder, on another filesystem when the run folder's is
full) and the command that writes it into the run folder once there is room.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ..fsmodes import write_private
from ..runbook import STAGE_ORDER
from . import fallback


def no_report(run_dir: Path, exc: BaseException, env: str) -> dict[str, Any]:
    """The facts and the one-line message for a run whose ``report.json`` cannot be read."""
    from .writer import render

    run_id = run_dir.name
    events = fallback.readable_events(run_dir / "audit.jsonl")
    finished = next((e for e in reversed(events) if e["kind"] == "run.finished"), None)
    status = str(finished["data"].get("status")) if finished else "unfinished"
    failed = next((e["data"].get("error") for e in reversed(events) if e["kind"] == "report.failed"), None)
    why = str(failed) if failed else f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
    copy: Path | None = None
    copy_error = None
    try:
        report = fallback.build(events, [s.value for s in STAGE_ORDER], run_id)
        folder = Path(tempfile.mkdtemp(prefix=f"pitstop-report-{run_id}-"))  # 0700, this user's only
        for name, text in render(report).items():
            write_private(folder / name, text)
        copy = folder / "report.html"
    except OSError as err:
        copy_error = f"{type(err).__name__}: {err.strerror or err}"
    where = f"a copy of the report: {copy}" if copy else f"no copy could be written either ({copy_error})"
    message = (f"run {run_id} ended ({status}) but its report could not be written in {run_dir} ({why}); the audit "
               f"log {run_dir / 'audit.jsonl'} is the record; {where}; once there is room, "
               f"`pitstop resume {run_id} --env {env}` writes the report into the run folder")
    return {"run_id": run_id, "status": status, "run_dir": str(run_dir), "report": None, "report_error": why,
            "fallback_report": str(copy) if copy else None, "message": message}
