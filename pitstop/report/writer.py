"""Writes ``report.json``, ``report.md`` and ``report.html`` into the run folder, seals every file
of the folder in ``manifest.json`` (SHA-256 each) and copies the folder to storage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, select_autoescape

from ..audit import read_events
from ..runbook import STAGE_ORDER
from ..units import human_seconds
from .builder import build_report

if TYPE_CHECKING:
    from ..context import RunContext

REPORT_FILES = ("report.json", "report.md", "report.html")


def _env() -> Environment:
    env = Environment(loader=PackageLoader("pitstop", "report/templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["dur"] = lambda s: "—" if s is None else human_seconds(float(s))
    env.filters["kib"] = lambda n: "—" if n is None else f"{n / 1024:,.1f} KiB"
    env.filters["ts"] = lambda t: "—" if not t else str(t).replace("T", " ")[:19] + " UTC"
    env.filters["timeline_style"] = lambda s, r: _bar(s["started_at"], s["finished_at"], r)
    env.filters["window_style"] = lambda w, r: _bar(w["started_at"], w["ended_at"], r)
    return env


def _bar(start: str | None, end: str | None, r: dict[str, Any]) -> str:
    """CSS left/width (percent of the run) for a timeline bar."""
    from datetime import datetime

    def t(x: str | None) -> float | None:
        return datetime.fromisoformat(x).timestamp() if x else None

    r0, r1 = t(r["started_at"]), t(r["finished_at"]) or t(end) or t(start)
    s0, s1 = t(start), t(end) or r1
    if r0 is None or r1 is None or s0 is None or s1 is None or r1 <= r0:
        return "left:0;width:100%"
    left = max(0.0, (s0 - r0) / (r1 - r0) * 100)
    width = max(0.3, (s1 - s0) / (r1 - r0) * 100)
    return f"left:{left:.2f}%;width:{min(width, 100 - left):.2f}%"


def render(report: dict[str, Any]) -> dict[str, str]:
    env = _env()
    return {
        "report.json": json.dumps(report, indent=2, sort_keys=False, default=str) + "\n",
        "report.md": env.get_template("report.md.j2").render(r=report),
        "report.html": env.get_template("report.html.j2").render(r=report),
    }


def seal(run_dir: Path) -> Path:
    files = {p.relative_to(run_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != "manifest.json"}
    path = run_dir / "manifest.json"
    path.write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=2) + "\n")
    return path


def write_report(ctx: RunContext) -> dict[str, Any]:
    events = read_events(ctx.run_dir / "audit.jsonl")
    report = build_report(events, [s.value for s in STAGE_ORDER])
    for name, text in render(report).items():
        out = ctx.run_dir / name
        out.write_text(ctx.redact(text), encoding="utf-8")
    seal(ctx.run_dir)
    try:
        for p in sorted(ctx.run_dir.iterdir()):
            if p.is_file():
                ctx.storage.put_bytes(f"reports/{ctx.cfg.name}/{ctx.run_id}/{p.name}", p.read_bytes())
    except Exception:  # noqa: BLE001,S110 - the local copy is the record; storage copy is best effort
        pass
    return {"dir": str(ctx.run_dir), "status": report["status"]}
