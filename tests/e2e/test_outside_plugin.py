"""A package outside pitstop adds a step: one module plus one entry-point line (``pitstop.plugins``).

The distribution is built by hand in ``tmp_path`` (a ``dist-info`` folder with ``entry_points.txt`` and the
module beside it), put on ``PYTHONPATH`` and used by the real CLI: ``validate`` knows the step and checks its
parameters at file:line, ``run --engine local`` runs it, with state of its own, and the report lists it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import report_of, run_cli

MODULE = '''
"""An outside plug-in: one step with typed params and a typed state of its own."""
from pydantic import BaseModel, ConfigDict, Field

from pitstop.model import StepOutcome
from pitstop.plugin import Plugin, PluginState
from pitstop.registry import Placement, Target, step


class HelloParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    greeting: str = Field(min_length=1)
    times: int = 1


class HelloState(PluginState):
    said: list[str] = Field(default_factory=list)


@step("acme.hello", params=HelloParams, placement=Placement.OUTSIDE, target=Target.NONE)
def hello(ctx, params: HelloParams) -> StepOutcome:
    """Say hello (an outside plug-in's step)."""
    said = ctx.state.of(HelloState).said
    said += [params.greeting] * params.times
    ctx.event("acme.greeted", greeting=params.greeting, total=len(said))
    return StepOutcome(changed=False, summary=f"said {params.greeting!r} {len(said)} times")


class AcmePlugin(Plugin):
    state = HelloState


PLUGIN = AcmePlugin("acme")
'''


def outside_distribution(site: Path) -> Path:
    site.mkdir()
    (site / "acme_pitstop_steps.py").write_text(MODULE)
    info = site / "acme_pitstop-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-pitstop\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pitstop.plugins]\nacme = acme_pitstop_steps:PLUGIN\n")
    return site


def runbook(path: Path, params: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"name": "acme", "stages": [
        {"name": "preflight", "steps": [{"uses": "acme.hello", "with": params},
                                        {"uses": "check.postgres_connect"}]}]}, sort_keys=False))
    return path


def test_an_outside_package_adds_a_step(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    site = outside_distribution(tmp_path / "site")
    penv = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}

    good = runbook(tmp_path / "acme.yaml", {"greeting": "hi", "times": 2})
    ok = run_cli("validate", "--env", str(env), "--runbook", str(good), env=penv)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    bad = runbook(tmp_path / "bad.yaml", {"greeting": "", "volume": 11})
    refused = run_cli("validate", "--env", str(env), "--runbook", str(bad), env=penv)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert f"{bad}:" in refused.stderr and "greeting" in refused.stderr and "volume" in refused.stderr

    without = run_cli("validate", "--env", str(env), "--runbook", str(good))  # not installed: unknown step
    assert without.returncode == 2 and "unknown step 'acme.hello'" in without.stderr, without.stderr

    res = run_cli("run", "--env", str(env), "--runbook", str(good), "--engine", "local", "--json", env=penv)
    assert res.returncode == 0, res.stdout + res.stderr
    report = report_of(res.stdout)
    assert report["status"] == "succeeded"
    (step,) = [st for s in report["stages"] for st in s["steps"] if st["name"] == "acme.hello"]
    assert step["status"] == "succeeded" and step["summary"] == "said 'hi' 2 times"
    events = [json.loads(line) for line in (Path(json.loads(res.stdout)["run_dir"]) / "audit.jsonl").open()]
    assert [e["data"]["total"] for e in events if e["kind"] == "acme.greeted"] == [2]
