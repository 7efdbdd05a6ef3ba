"""JSON Schemas for config and runbook files, so editors can validate and autocomplete.

The runbook schema knows every registered step: ``with`` is checked against the step's own
parameters model once ``uses`` names it.
"""

from __future__ import annotations

from typing import Any

from .config import EnvironmentConfig
from .registry import load_plugins
from .runbook import Runbook


def config_schema() -> dict[str, Any]:
    schema = EnvironmentConfig.model_json_schema(by_alias=True)
    schema["properties"].pop("source", None)
    schema["title"] = "pitstop environment config"
    return schema


def runbook_schema() -> dict[str, Any]:
    schema = Runbook.model_json_schema(by_alias=True)
    schema["properties"].pop("source", None)
    schema["title"] = "pitstop runbook"
    steps = load_plugins()
    defs = schema.setdefault("$defs", {})
    spec = defs["StepSpec"]
    spec["properties"]["uses"]["enum"] = sorted(steps)
    rules = []
    for name, info in sorted(steps.items()):
        params = info.params.model_json_schema()
        for k, v in params.pop("$defs", {}).items():
            defs.setdefault(k, v)
        rules.append({"if": {"properties": {"uses": {"const": name}}, "required": ["uses"]},
                      "then": {"properties": {"with": params}}})
    spec["allOf"] = rules
    return schema
