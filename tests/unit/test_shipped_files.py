"""Every shipped runbook validates against the demo config, and the JSON Schemas know every step."""

from __future__ import annotations

import pytest

from pitstop.config import load_config
from pitstop.registry import load_plugins
from pitstop.runbook import load_runbook
from pitstop.schema import config_schema, runbook_schema
from tests.conftest import ROOT

RUNBOOKS = sorted(p.stem for p in (ROOT / "runbooks").glob("*.yaml"))


@pytest.mark.parametrize("name", RUNBOOKS)
def test_runbook_validates_against_demo(name: str) -> None:
    rb = load_runbook(name, load_config("demo"))
    assert rb.stages[0].name.value == "preflight" and rb.stages[-1].name.value == "report"


def test_there_are_monthly_quarterly_and_emergency_runbooks() -> None:
    kinds = {load_runbook(n).kind for n in RUNBOOKS}
    assert {"monthly", "quarterly", "emergency"} <= kinds


def test_runbook_schema_lists_every_step_with_its_parameters() -> None:
    schema = runbook_schema()
    spec = schema["$defs"]["StepSpec"]
    assert set(spec["properties"]["uses"]["enum"]) == set(load_plugins())
    rules = {r["if"]["properties"]["uses"]["const"]: r["then"]["properties"]["with"] for r in spec["allOf"]}
    assert "compress_after_days" in rules["tuning.logs"]["properties"]
    assert "name" in config_schema()["required"]
