"""The paths taken when something already went wrong: a section that fails on odd data, a renderer
that fails, a builder that fails. Each still leaves report.json/md/html and a sealed manifest that
``report verify`` accepts, says what could not be rendered and why (error class and message, no
traceback, no secret), and keeps the report's shape for everything that reads report.json."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from pitstop.console import print_summary
from pitstop.context import Redactor
from pitstop.report import fallback, writer
from pitstop.report.builder import build_report
from pitstop.runbook import STAGE_ORDER
from tests.reports.replay import chained, replay

SECRET = "canary-render-secret-31337"
RUN_ID = "20261204T020000Z-test-monthly-abc123"


def _log(*extra: dict[str, Any]) -> list[str]:
    start = {"kind": "run.started", "ts": "2026-12-04T02:00:00+00:00",
             "data": {"run_id": RUN_ID, "environment": "test", "runbook": "monthly", "trigger": "manual",
                      "expected_downtime_s": 300.0}}
    return chained([start, *extra])


def test_a_section_that_fails_is_a_note_and_the_rest_renders(tmp_path: Path) -> None:
    # a data_parity difference that is not a number: the HTML formats it with "%+d"
    check = {"kind": "check", "ts": "2026-12-04T02:01:00+00:00",
             "data": {"name": "data_parity", "status": "fail", "stage": "post-verification",
                      "evidence": {"source": "snapshot", "tables": {"public.events": {"difference": "many"}}}}}
    report, texts = replay(tmp_path / RUN_ID, _log(check))
    html, md = texts["report.html"], texts["report.md"]
    assert "The checks section could not be rendered" in html and "TypeError" in html
    assert html.count("could not be rendered") == 2  # the note in place, and the list at the top
    for section in ('id="summary"', 'id="stages"', 'id="backup"', 'id="notifications"', "<footer>"):
        assert section in html, section
    assert "Traceback" not in html and "## Checks" in md  # the Markdown table renders the text as is
    # the builder read everything; report.json names the section the HTML could not render
    assert report["render_errors"] == ["report.html: the checks section could not be rendered (TypeError: "
                                       "%d format: a real number is required, not str)"]


def test_a_renderer_that_fails_gives_a_minimal_file_and_the_folder_is_sealed(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    real = writer.render_template

    def broken(template: str, report: dict[str, Any]) -> str:
        if template == "report.html.j2":
            raise RuntimeError(f"disk said no while writing for {SECRET}\nsecond line")
        return real(template, report)

    monkeypatch.setattr(writer, "render_template", broken)
    report, texts = replay(tmp_path / RUN_ID, _log(), Redactor([SECRET]))
    html = texts["report.html"]
    assert "Maintenance report (minimal)" in html and "report.html could not be rendered in full" in html
    assert "RuntimeError: disk said no" in html and "second line" not in html
    assert SECRET not in html and all(SECRET not in t for t in texts.values())
    assert report["run_id"] == RUN_ID and report["status"] == "crashed"  # report.json itself is whole
    assert report["render_errors"] == ["report.html: rendered minimal (RuntimeError: disk said no while writing "
                                       "for ***)"]
    assert "Maintenance report — monthly on test" in texts["report.md"]


def test_a_builder_that_fails_gives_the_minimal_report_in_full_shape(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise KeyError("stage")

    monkeypatch.setattr(fallback, "build_report", broken)
    finished = {"kind": "run.finished", "ts": "2026-12-04T02:05:00+00:00",
                "data": {"status": "failed", "failure": {"error": "boom"}}}
    report, texts = replay(tmp_path / RUN_ID, _log(finished))
    assert report["minimal"] is True and report["status"] == "failed" and report["run_id"] == RUN_ID
    assert report["render_errors"] == ["the full report could not be built from the audit log (KeyError: 'stage')"]
    assert report["failure"] == {"stage": None, "step": None, "error": "boom", "error_type": None}
    for name in ("report.md", "report.html"):  # rendered by the real templates, with the reason on top
        assert "could not be built from the audit log" in texts[name] and "(minimal)" not in texts[name]
    _summary_prints(report)


def _summary_prints(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    print_summary(Console(file=buf, width=100), report, "/runs/x")
    return buf.getvalue()


@pytest.mark.parametrize("events", [
    [{"kind": "stage.started", "ts": None, "data": {"stage": ["a", "list"], "phase": {}}}],  # no run.started
    [{"kind": "run.started", "ts": "yesterday", "data": None},
     {"kind": "step.finished", "ts": 5, "data": {"stage": None, "step": {"x": 1}, "duration_s": "slow",
                                                 "hosts": ["web-1", None, {"status": []}]}},
     {"kind": "window.closed", "ts": "2026-12-04T02:05:00", "data": {"duration_s": float("inf"), "ok": "yes"}},
     {"kind": "run.finished", "ts": "2026-12-04T02:06:00+00:00", "data": {"status": 3, "failure": "text"}}],
])
def test_odd_logs_keep_the_report_shape_for_every_reader(events: list[dict[str, Any]], tmp_path: Path) -> None:
    report, texts = replay(tmp_path / RUN_ID, chained(events))
    assert report["run_id"] == RUN_ID and isinstance(report["status"], str)
    assert not report.get("minimal")
    assert report["status"].upper() in _summary_prints(report)  # the console's summary reads it too
    rebuilt = build_report(json.loads(json.dumps([json.loads(x) for x in chained(events)])),
                           [s.value for s in STAGE_ORDER], RUN_ID)
    assert rebuilt["audit"]["events"] == len(events)
