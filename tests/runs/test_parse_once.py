"""A command parses its inputs once: ``pitstop resume`` reads the config, the runbook and the audit log one
time each, and a step's parameters are validated once (when the runbook is loaded; the plan carries them)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

MARK = "parse-once probe"  # tells this runbook's step parameters from those of other runbooks the feed reads
STEPS = [{"uses": "check.sql_assert", "name": name, "destructive": False,
          "with": {"sql": "select 1", "expect_scalar": 1, "description": MARK}} for name in ("first", "second")]


def crashed_run(make_env: Any, tmp_path: Path) -> tuple[Path, str, Path]:
    """A real run whose process 'died' after its first step: its log cut after that step's finish (the chain
    of what is left is intact) and no report or seal."""
    from pitstop.runner import execute

    env = make_env()
    rb = tmp_path / "two.yaml"
    rb.write_text(yaml.safe_dump({"name": "two", "stages": [{"name": "preflight", "steps": STEPS}]}))
    result = execute(str(env), str(rb))
    log = result.run_dir / "audit.jsonl"
    lines = log.read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "step.finished")
    log.write_text("\n".join(lines[: cut + 1]) + "\n")
    for name in ("manifest.json", "report.json", "report.md", "report.html"):
        (result.run_dir / name).unlink(missing_ok=True)
    return env, result.run_id, result.run_dir


def test_resume_reads_config_runbook_and_audit_log_once(make_env: Any, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from pitstop import audit, yamlfile
    from pitstop.cli import app

    env, run_id, run_dir = crashed_run(make_env, tmp_path)
    reads: Counter[str] = Counter()
    real_load, real_verify = yamlfile.load, audit.verify_chain
    real_chain = getattr(audit, "read_chain", None)

    def load(path: Path, *a: Any, **k: Any) -> Any:  # other files (the feed's scheduled runbooks) are not counted
        which = {env.resolve(): "config", (tmp_path / "two.yaml").resolve(): "runbook"}.get(Path(path).resolve())
        if which:
            reads[which] += 1
        return real_load(path, *a, **k)

    def before_the_attempt(path: Path) -> bool:  # the report stage checks the finished log again, rightly
        return path.name == "audit.jsonl" and b'"run.resumed"' not in path.read_bytes()

    def read_chain(path: Path) -> Any:
        reads["audit"] += before_the_attempt(path)
        return real_chain(path)  # type: ignore[misc]

    def verify_chain(path: Path) -> Any:  # the older API: a read of its own
        reads["audit"] += before_the_attempt(path)
        return real_verify(path)

    monkeypatch.setattr(yamlfile, "load", load)
    monkeypatch.setattr(audit, "read_chain", read_chain, raising=False)
    monkeypatch.setattr(audit, "verify_chain", verify_chain)
    validated: Counter[str] = Counter()
    from pitstop.registry import get_step

    params_model = get_step("check.sql_assert").params
    real_validate = params_model.model_validate.__func__  # type: ignore[attr-defined]

    def counted(cls: Any, obj: Any, *a: Any, **k: Any) -> Any:
        validated["ours"] += isinstance(obj, dict) and obj.get("description") == MARK
        return real_validate(cls, obj, *a, **k)

    monkeypatch.setattr(params_model, "model_validate", classmethod(counted))

    res = CliRunner().invoke(app, ["resume", run_id, "--env", str(env), "--engine", "local", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "succeeded"
    assert [st["name"] for s in report["stages"] for st in s["steps"]] == ["first", "second"]
    assert reads["config"] == 1 and reads["runbook"] == 1, reads
    # the audit log is read, parsed and its chain checked once before the resumed attempt starts (then the
    # log appender loads it to continue the chain)
    assert reads["audit"] == 1, reads
    assert validated["ours"] == len(STEPS), validated  # once per step, when the runbook is loaded


@pytest.mark.parametrize("engine", ["local", "prefect"])
def test_run_reads_config_and_runbook_once(engine: str, make_env: Any, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """``pitstop run`` validates its input before the engine starts, then the engine (and the flow run the CLI
    runs in this process) takes what was parsed: each file once, with either engine."""
    from pitstop import yamlfile
    from pitstop.cli import app

    if engine == "prefect":
        request.getfixturevalue("prefect_api")
    env = make_env()
    rb = tmp_path / "two.yaml"
    rb.write_text(yaml.safe_dump({"name": "two", "stages": [{"name": "preflight", "steps": STEPS}]}))
    reads: Counter[str] = Counter()
    real_load = yamlfile.load

    def load(path: Path, *a: Any, **k: Any) -> Any:
        which = {env.resolve(): "config", rb.resolve(): "runbook"}.get(Path(path).resolve())
        reads[which or "other"] += 1
        return real_load(path, *a, **k)

    monkeypatch.setattr(yamlfile, "load", load)
    res = CliRunner().invoke(app, ["run", "--env", str(env), "--runbook", str(rb), "--engine", engine, "--json"])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert json.loads(out[out.index("{"):out.rindex("}") + 1])["status"] == "succeeded", out
    assert reads["config"] == 1 and reads["runbook"] == 1, reads
