"""A report for every run that started, whatever happened: replayed as a property.

This package is collected last (``zz_``), so by the time it runs the rest of the suite has written
its run folders under pytest's base temp: every ``audit.jsonl`` found there is part of the corpus,
next to four runs made here (a healthy monthly run, a run whose backup verification fails, a failed
step, an emergency). Every prefix of every log (a run killed after any event) and generated payloads
go through the builder, all three renderers and the seal; each time the folder must hold
report.json/md/html and a manifest that ``report verify`` accepts, and never a traceback.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitstop.audit import AuditLog, read_events
from pitstop.report.verify import verify_run_dir
from pitstop.report.writer import REPORT_FILES, render_run_folder
from tests.conftest import run_cli

FULL_PREFIX_LOGS = 4  # this module's own runs, replayed at every prefix
SUITE_LOGS = 80  # of the rest of the suite's logs (a seeded sample when there are more) ...
SUITE_PREFIXES = 6  # ... each at its full length and this many random prefixes (CI time)


def _replay(events: list[dict[str, Any]], where: Path) -> dict[str, Any]:
    """Write ``events`` as a fresh hash-chained log in ``where`` (content as recorded), then render."""
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    log = AuditLog(where / "audit.jsonl")
    for ev in events:
        log.emit(ev["kind"], **(ev.get("data") if isinstance(ev.get("data"), dict) else {}))
    report, texts = render_run_folder(where)
    for name in REPORT_FILES:
        assert (where / name).is_file() and (where / name).stat().st_size > 0, name
        assert "Traceback" not in (where / name).read_text()
    assert verify_run_dir(where) is None
    json.loads((where / "report.json").read_text())
    return report


def _write_runbook(path: Path, stages: list[dict[str, Any]], kind: str = "monthly") -> Path:
    path.write_text(yaml.safe_dump({"name": path.stem, "kind": kind, "stages": stages}, sort_keys=False))
    return path


@pytest.fixture
def own_runs(make_env: Any, tmp_path: Path) -> list[Path]:
    env = make_env()
    state = tmp_path / "state"
    corrupt = _write_runbook(tmp_path / "corrupt.yaml", [
        {"name": "pre-backup", "steps": [
            {"uses": "backup.postgres"},
            {"uses": "host.command", "destructive": False,
             "name": "damage the stored dump", "targets": "app", "window": "outside",
             "with": {"argv": ["sh", "-c", f"for f in {state}/storage/backups/*/*/*.dump; do "
                                           "truncate -s 64 \"$f\"; done"]}},
            {"uses": "backup.verify"}]},
        {"name": "database-cleanup", "steps": [{"uses": "cleanup.retention"}]}])
    failing = _write_runbook(tmp_path / "failing.yaml", [
        {"name": "server-tuning", "steps": [{"uses": "host.command", "destructive": False, "targets": "app",
                                             "with": {"argv": ["false"]}}]}], kind="custom")
    runs = []
    for args in (["run", "--runbook", "monthly"], ["run", "--runbook", str(corrupt)],
                 ["run", "--runbook", str(failing)],
                 ["emergency", "--runbook", "emergency-disk", "--reason", "disk at 97%"]):
        res = run_cli(*args, "--env", str(env), "--engine", "local", "--json")
        assert res.returncode in (0, 1), res.stderr + res.stdout
        assert "Traceback" not in res.stderr
        info = json.loads(res.stdout)
        run_dir = Path(info["run_dir"])
        assert verify_run_dir(run_dir) is None, run_dir
        runs.append(run_dir)
    verify_failed = json.loads((runs[1] / "report.json").read_text())
    assert verify_failed["status"] == "failed" and verify_failed["backup"]["verified"] is False
    assert any(e["kind"] == "backup.verify_failed" for e in read_events(runs[1] / "audit.jsonl"))
    verified = run_cli("report", "verify", str(runs[1]))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return runs


def test_every_prefix_of_every_audit_log_gives_a_sealed_report(own_runs: list[Path], tmp_path: Path,
                                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    suite_logs = sorted(tmp_path_factory.getbasetemp().rglob("audit.jsonl"))
    own = [r / "audit.jsonl" for r in own_runs]
    rng = random.Random(18)
    others = [p for p in suite_logs if p not in own]
    logs = own + (sorted(rng.sample(others, SUITE_LOGS)) if len(others) > SUITE_LOGS else others)
    replayed = 0
    for i, log in enumerate(logs):
        try:
            events = read_events(log)
        except (ValueError, UnicodeDecodeError):
            continue  # a log a tamper test damaged on purpose
        cuts = range(1, len(events) + 1) if i < FULL_PREFIX_LOGS else sorted(
            set(rng.sample(range(1, len(events) + 1), min(SUITE_PREFIXES, len(events)))) | {len(events)})
        for k in cuts:
            report = _replay(events[:k], tmp_path / "replay")
            if any(e["kind"] == "run.started" for e in events[:k]):
                assert report.get("run_id"), (log, k)
            replayed += 1
    assert len(logs) >= 4 and replayed > 100


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)
KINDS = ["run.started", "run.finished", "stage.started", "stage.finished", "step.started", "step.finished",
         "step.failed", "step.skipped", "backup.created", "backup.verified", "backup.verify_failed", "check",
         "command", "notification", "retry", "maintenance.on", "maintenance.off", "cleanup.rule",
         "gate.overridden", "run.abandoned", "run.resumed", "window.opened", "window.closed", "host.result"]


@st.composite
def mangled_logs(draw: st.DrawFn, base: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A real log with some payloads replaced, keys dropped or added, and generated events inserted."""
    events = [{"kind": e["kind"], "data": dict(e["data"])} for e in base[:draw(st.integers(1, len(base)))]]
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, len(events) - 1))
        data = events[i]["data"]
        action = draw(st.sampled_from(["drop", "set", "insert"]))
        if action == "drop" and data:
            data.pop(draw(st.sampled_from(sorted(data))))
        elif action == "set":
            key = draw(st.sampled_from(sorted(data) or ["x"]) | st.text(max_size=10))
            data[key] = draw(JSONISH)
        else:
            events.insert(i, {"kind": draw(st.sampled_from(KINDS)),
                              "data": draw(st.dictionaries(st.text(max_size=12), JSONISH, max_size=5))})
    return events


@pytest.fixture
def base_logs(own_runs: list[Path]) -> list[list[dict[str, Any]]]:
    return [read_events(r / "audit.jsonl") for r in own_runs]


def test_generated_payloads_never_cost_a_report(base_logs: list[list[dict[str, Any]]], tmp_path: Path) -> None:
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def prop(data: st.DataObject) -> None:
        base = data.draw(st.sampled_from(base_logs))
        _replay(data.draw(mangled_logs(base)), tmp_path / "gen")

    prop()
