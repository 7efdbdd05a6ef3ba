"""A report for every run that started, whatever happened (issue 18), as a property.

The corpus is made here, through the CLI, in an environment of its own: a healthy monthly run, a run
whose backup verification fails (its dump truncated in storage), a run whose post-verification fails,
a run with a failed step, an emergency run, and a run SIGKILLed inside its window then resumed; plus
whatever audit log the reliability suite's bad-input corpus can produce (each case is refused before
a run folder exists, which is checked too). Every prefix of every log — the run killed after each
event — goes through the builder, the three renderers and the seal: each time the folder holds
report.json/md/html and a manifest that ``report verify`` accepts, and the report is complete (the
builder read every event, every section rendered). Then hypothesis mangles the payloads of those
logs (keys dropped and added, values of any JSON type, huge numbers, unicode, broken timestamps)
and the folder must still be complete and sealed, never a traceback, never the minimal report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitstop.context import Redactor
from tests.conftest import run_cli
from tests.reports.conftest import CANARIES, Corpus
from tests.reports.replay import chained, fully_rendered, lines_of, replay


def test_the_corpus_runs_end_as_their_reports_say(corpus: Corpus) -> None:
    want = {"killed-and-resumed": "succeeded", "monthly": "succeeded", "backup-verify-failed": "failed",
            "post-verification-failed": "failed_verification", "failed-step": "failed", "emergency": "succeeded"}
    for name, status in want.items():
        run_dir = corpus.runs[name]
        report = json.loads((run_dir / "report.json").read_text())
        assert report["status"] == status, (name, report["status"], report["failure"])
        assert (run_dir / "report.md").is_file() and (run_dir / "report.html").is_file()
        verified = run_cli("report", "verify", str(run_dir))
        assert verified.returncode == 0 and "intact" in verified.stdout, (name, verified.stdout, verified.stderr)
    failed = json.loads((corpus.runs["backup-verify-failed"] / "report.json").read_text())
    assert failed["backup"]["verified"] is False and failed["backup"]["verification"]
    assert not failed["render_errors"] and "could not be" not in (corpus.runs["backup-verify-failed"] /
                                                                  "report.html").read_text()
    resumed = json.loads((corpus.runs["killed-and-resumed"] / "report.json").read_text())
    assert len(resumed["maintenance_window"]["attempts"]) == 2


def test_every_prefix_of_every_audit_log_gives_a_complete_sealed_report(corpus: Corpus,
                                                                       tmp_path: Path) -> None:
    replayed = 0
    for name, run_dir in corpus.runs.items():
        lines = lines_of(run_dir / "audit.jsonl")
        for k in range(1, len(lines) + 1):
            events = [json.loads(x) for x in lines[:k]]
            report, texts = replay(tmp_path / run_dir.name, lines[:k])
            fully_rendered(report, texts)
            assert report["run_id"] == run_dir.name, (name, k)
            assert report["audit"]["events"] == k and report["audit"]["last_hash"] == events[-1]["hash"]
            finished = [e for e in events if e["kind"] == "run.finished"]
            assert report["status"] == (finished[-1]["data"]["status"] if finished else "crashed"), (name, k)
            replayed += 1
    assert replayed > 300, replayed


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
    | st.sampled_from(["2026-12-04T02:00:00+00:00", "not a time", "", "🚧", "１２", "NaN", "-1"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=10)
KINDS = ["run.started", "run.finished", "run.resumed", "run.abandoned", "stage.started", "stage.finished",
         "step.started", "step.finished", "step.skipped", "backup.created", "backup.verified",
         "backup.verify_failed", "check", "command", "notification", "retry", "maintenance.on", "maintenance.off",
         "window.opened", "window.closed", "cleanup.purged", "cleanup.vacuumed", "cleanup.reindexed",
         "cleanup.rewritten", "data.snapshot", "gate.overridden", "notice.lead_time", "report.failed"]


def _paths(v: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place inside a payload that holds a value (dict keys and list indexes, nested)."""
    out = [at] if at else []
    if isinstance(v, dict):
        for k, x in v.items():
            out += _paths(x, (*at, k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += _paths(x, (*at, i))
    return out


@st.composite
def mangled(draw: st.DrawFn, base: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A prefix of a real log with values anywhere replaced, keys dropped or added, events inserted,
    payloads of another type, timestamps broken — and a canary secret somewhere."""
    events = [{"kind": e["kind"], "ts": e["ts"], "data": json.loads(json.dumps(e["data"]))}
              for e in base[:draw(st.integers(1, len(base)))]]
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(events) - 1))
        ev = events[i]
        action = draw(st.sampled_from(["replace", "drop", "add", "insert", "payload", "ts", "secret"]))
        paths = _paths(ev["data"])
        if action in ("replace", "drop") and paths:
            path = draw(st.sampled_from(paths))
            parent = ev["data"]
            for step in path[:-1]:
                parent = parent[step]
            if action == "replace":
                parent[path[-1]] = draw(JSONISH)
            else:
                parent.pop(path[-1])
        elif action == "add" and isinstance(ev["data"], dict):
            ev["data"][draw(st.text(max_size=10))] = draw(JSONISH)
        elif action == "insert":
            events.insert(i, {"kind": draw(st.sampled_from(KINDS)), "ts": ev["ts"],
                              "data": draw(st.dictionaries(st.text(max_size=12), JSONISH, max_size=5))})
        elif action == "payload":
            ev["data"] = draw(JSONISH)
        elif action == "ts":
            ev["ts"] = draw(JSONISH)
        elif action == "secret" and isinstance(ev["data"], dict):
            ev["data"][draw(st.sampled_from(["error", "reason", "summary", "x"]))] = \
                f"boom {CANARIES['PITSTOP_T_DB_PASSWORD']}"
    return events


@pytest.fixture(scope="module")
def base_logs(corpus: Corpus) -> list[list[dict[str, Any]]]:
    return [[json.loads(x) for x in lines_of(d / "audit.jsonl")] for d in corpus.runs.values()]


def test_generated_payloads_never_cost_a_report(base_logs: list[list[dict[str, Any]]], tmp_path: Path) -> None:
    redact = Redactor(list(CANARIES.values()))
    minimal = 0

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def prop(data: st.DataObject) -> None:
        nonlocal minimal
        events = data.draw(mangled(data.draw(st.sampled_from(base_logs))))
        report, texts = replay(tmp_path / "20261204T020000Z-gen", chained(events), redact)
        assert report["audit"]["events"] == len(events)
        for name, text in texts.items():
            assert CANARIES["PITSTOP_T_DB_PASSWORD"] not in text, name
            assert "Maintenance report (minimal)" not in text, (name, report["render_errors"])
        minimal += bool(report.get("minimal"))

    prop()
    assert minimal == 0, f"{minimal} generated logs lost their full report to the minimal one"
