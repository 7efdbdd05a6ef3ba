"""Replaying audit logs into run folders: what the report-invariant tests share.

``replay`` writes a log into a fresh run folder, renders and seals it exactly as a run's end does
(``render_run_folder``), and checks the invariant: report.json (strict JSON, the full report shape),
report.md and report.html written, manifest.json sealing all of them, and the folder intact for
``pitstop report verify``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pitstop.audit import GENESIS, event_hash
from pitstop.report.builder import SCHEMA_VERSION
from pitstop.report.shape import empty_report
from pitstop.report.verify import verify_run_dir
from pitstop.report.writer import MANIFEST, REPORT_FILES, render_run_folder

SHAPE = set(empty_report(SCHEMA_VERSION))


def _strict(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"report.json holds {name}: not JSON")

    return json.loads(text, parse_constant=refuse)


def lines_of(path: Path) -> list[str]:
    """The lines of a real audit log, as written (a prefix of them is a valid chain)."""
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def chained(events: list[dict[str, Any]]) -> list[str]:
    """Events with their kind, ts and data as given, re-chained (seq, prev, hash) like AuditLog writes."""
    out, prev = [], GENESIS
    for n, e in enumerate(events, start=1):
        ev = {"seq": n, "ts": e.get("ts"), "kind": e["kind"], "data": e.get("data"), "prev": prev}
        ev["hash"] = event_hash(ev)
        prev = ev["hash"]
        out.append(json.dumps(ev, sort_keys=True, default=str))
    return out


def replay(where: Path, lines: list[str], redact: Any = str) -> tuple[dict[str, Any], dict[str, str]]:
    """Write ``lines`` as ``where/audit.jsonl``, render and seal; assert a complete, intact run folder.

    Returns report.json as written and the texts of the three files."""
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    (where / "audit.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    render_run_folder(where, redact)
    texts = {name: (where / name).read_text(encoding="utf-8") for name in REPORT_FILES}
    for name, text in texts.items():
        assert text.strip(), f"{name} is empty"
        assert "Traceback" not in text, name
    report = _strict(texts["report.json"])
    assert SHAPE <= set(report), f"report.json lacks {sorted(SHAPE - set(report))}"
    manifest = json.loads((where / MANIFEST).read_text())
    assert {*REPORT_FILES, "audit.jsonl"} <= set(manifest["files"]), manifest["files"]
    problem = verify_run_dir(where)
    assert problem is None, f"report verify: {problem}"
    return report, texts


def fully_rendered(report: dict[str, Any], texts: dict[str, str]) -> None:
    """Nothing was left out: the builder read every event, every section of every format rendered."""
    assert report["render_errors"] == [] and not report.get("minimal"), report["render_errors"]
    for name in ("report.md", "report.html"):
        assert "could not be" not in texts[name], (name, texts[name][:2000])


def rewrite_without(run_dir: Path, drop_kind: str) -> None:
    """What someone who can rewrite the run folder can do: drop every ``drop_kind`` event, recompute the
    chain, re-render the reports and reseal the manifest. The folder alone then verifies."""
    events = [json.loads(x) for x in lines_of(run_dir / "audit.jsonl")]
    kept = [e for e in events if e["kind"] != drop_kind]
    assert len(kept) < len(events), f"no {drop_kind} event to drop"
    for p in run_dir.iterdir():
        if p.is_file():
            p.unlink()
    (run_dir / "audit.jsonl").write_text("".join(line + "\n" for line in chained(kept)), encoding="utf-8")
    render_run_folder(run_dir)
    assert verify_run_dir(run_dir) is None, "the rewritten folder should verify on its own: the test proves nothing"
