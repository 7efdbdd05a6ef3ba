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
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitstop.context import Redactor
from pitstop.errors import InputError
from tests.conftest import run_cli
from tests.reliability.corpus import CASES
from tests.reliability.helpers import DEMO_CONFIG, MONTHLY, kill_when, point_at, start
from tests.reports.conftest import CANARIES, make_secret_env
from tests.reports.replay import chained, fully_rendered, lines_of, replay

RUNS = ("killed-and-resumed", "monthly", "backup-verify-failed", "post-verification-failed", "failed-step",
        "emergency")


def _runbook(path: Path, stages: list[dict[str, Any]], kind: str = "custom") -> str:
    path.write_text(yaml.safe_dump({"name": path.stem, "kind": kind, "expected_downtime": "5m",
                                    "stages": stages}, sort_keys=False))
    return str(path)


def _cli_run(env_path: Path, env: dict[str, str], *args: str) -> tuple[Path, Any]:
    res = run_cli(*args, "--env", str(env_path), "--engine", "local", "--json", env=env)
    assert "Traceback" not in res.stderr, res.stderr
    info = json.loads(res.stdout)
    return Path(info["run_dir"]), res


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, pg_data_dir: Path, pg_socket: str,
           receiver: tuple[int, list[dict[str, Any]]]) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("replay")
    env_path, env = make_secret_env(base, pg_data_dir, pg_socket, receiver[0])
    state = base / "state"
    runs: dict[str, Path] = {}

    # killed inside the window (SIGKILL as soon as maintenance is on), then resumed to the end
    proc = start("run", "--env", str(env_path), "--runbook", "monthly", "--engine", "local", "--json", env=env)
    killed = kill_when(proc, state / "runs", lambda evs: any(e.get("kind") == "maintenance.on" for e in evs))
    assert killed is not None and proc.returncode == -signal.SIGKILL
    resumed = run_cli("resume", killed.name, "--env", str(env_path), "--engine", "local", "--json", env=env)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
    runs["killed-and-resumed"] = killed

    runs["monthly"], res = _cli_run(env_path, env, "run", "--runbook", "monthly")
    assert res.returncode == 0, res.stderr

    newest_dump = f"ls -t {state}/storage/backups/*/*/*.dump | head -1"
    truncate = _runbook(base / "verify-fails.yaml", [
        {"name": "pre-backup", "steps": [
            {"uses": "backup.postgres"},
            {"uses": "host.command", "name": "damage the stored dump", "destructive": False, "targets": "app",
             "window": "outside", "with": {"argv": ["sh", "-c", f'truncate -s 64 "$({newest_dump})"']}},
            {"uses": "backup.verify"}]},
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on"}]},
        {"name": "database-cleanup", "steps": [{"uses": "cleanup.retention"}]},
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off"}]}], kind="monthly")
    runs["backup-verify-failed"], res = _cli_run(env_path, env, "run", "--runbook", truncate)
    assert res.returncode == 1, res.stderr  # the run's exit code: it failed, its report says so

    closed_port = _runbook(base / "post-verification-fails.yaml", [
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on"}]},
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off"}]},
        {"name": "post-verification", "steps": [
            {"uses": "check.tcp", "name": "application port answers",
             "with": {"host": "127.0.0.1", "port": 9, "timeout_s": 1}}]}])
    runs["post-verification-failed"], res = _cli_run(env_path, env, "run", "--runbook", closed_port)
    assert res.returncode == 1, res.stderr

    failing = _runbook(base / "failing.yaml", [
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on"}]},
        {"name": "server-tuning", "steps": [{"uses": "host.command", "destructive": False, "targets": "app",
                                             "with": {"argv": ["false"]}}]},
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off"}]}])
    runs["failed-step"], res = _cli_run(env_path, env, "run", "--runbook", failing)
    assert res.returncode == 1, res.stderr

    runs["emergency"], res = _cli_run(env_path, env, "emergency", "--runbook", "emergency-disk",
                                      "--reason", "disk on db-1 at 97%")
    assert res.returncode == 0, res.stderr

    # the reliability suite's bad-input corpus: every case is refused before a run folder exists
    from pitstop.runner import execute

    bad = base / "bad-inputs"
    for i, case in enumerate(CASES):
        d = bad / f"case{i}"
        d.mkdir(parents=True)
        cfg_text = DEMO_CONFIG if case.file == "runbook" else case.edit(DEMO_CONFIG)
        rb_text = case.edit(MONTHLY) if case.file == "runbook" else MONTHLY
        (d / "env.yaml").write_text(point_at(cfg_text, d / "state", pg_data_dir, "postgres"))
        (d / "runbook.yaml").write_text(rb_text)
        try:
            result = execute(str(d / "env.yaml"), str(d / "runbook.yaml"))
        except InputError:
            assert not (d / "state").exists(), case.id
            continue
        runs[f"bad-input {case.id}"] = result.run_dir  # a case that ran: its log joins the corpus
    return runs


def test_the_corpus_runs_end_as_their_reports_say(corpus: dict[str, Path]) -> None:
    want = {"killed-and-resumed": "succeeded", "monthly": "succeeded", "backup-verify-failed": "failed",
            "post-verification-failed": "failed_verification", "failed-step": "failed", "emergency": "succeeded"}
    for name, status in want.items():
        run_dir = corpus[name]
        report = json.loads((run_dir / "report.json").read_text())
        assert report["status"] == status, (name, report["status"], report["failure"])
        assert (run_dir / "report.md").is_file() and (run_dir / "report.html").is_file()
        verified = run_cli("report", "verify", str(run_dir))
        assert verified.returncode == 0 and "intact" in verified.stdout, (name, verified.stdout, verified.stderr)
    failed = json.loads((corpus["backup-verify-failed"] / "report.json").read_text())
    assert failed["backup"]["verified"] is False and failed["backup"]["verification"]
    assert not failed["render_errors"] and "could not be" not in (corpus["backup-verify-failed"] /
                                                                  "report.html").read_text()
    resumed = json.loads((corpus["killed-and-resumed"] / "report.json").read_text())
    assert len(resumed["maintenance_window"]["attempts"]) == 2


def test_every_prefix_of_every_audit_log_gives_a_complete_sealed_report(corpus: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    replayed = 0
    for name, run_dir in corpus.items():
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
    print("REPLAYED", replayed, {n: len(lines_of(d / "audit.jsonl")) for n, d in corpus.items()})
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
def base_logs(corpus: dict[str, Path]) -> list[list[dict[str, Any]]]:
    return [[json.loads(x) for x in lines_of(d / "audit.jsonl")] for d in corpus.values()]


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
