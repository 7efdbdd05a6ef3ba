"""Hostile flow parameters: a Prefect UI or API user gets the CLI's guards, not a path into the disk.

``run_id='../../../../outside'`` once wrote the run folder outside the reports directory; ``env`` and
``runbook`` accepted any YAML path; ``accept_unverified_backup`` needed no reason. The flow function is
called as Prefect calls it (its ``fn``, with and without a deployment's own parameters).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pitstop.errors import InputError
from pitstop.input_guards import flow_parameters
from tests.reliability.results import record

HOSTILE_RUN_IDS = ["../../../../outside", "/tmp/abs", "a/../../b", "..", "x\n", ""]


def test_hostile_run_ids_never_reach_the_disk(make_env: Any, tmp_path: Path) -> None:
    from pitstop.prefect_adapter import maintenance

    env = make_env()
    trusted = 0
    for rid in HOSTILE_RUN_IDS:
        try:
            maintenance.fn(env=str(env), runbook="monthly", run_id=rid)
            trusted += 1
        except InputError:
            pass
    outside = [p for p in tmp_path.rglob("*") if "outside" in p.name or p.name == "b"]
    record("flow_run_ids", forged_inputs=len(HOSTILE_RUN_IDS), trusted=trusted + len(outside))
    assert trusted == 0 and outside == []
    assert not (tmp_path / "state" / "runs").exists() or not list((tmp_path / "state" / "runs").iterdir())


CASES = [
    # (env, runbook, deployment's own parameters, accept_unverified_backup, reason, accepted?)
    ("/tmp/evil.yaml", "monthly", {"env": "/srv/pitstop/prod.yaml", "runbook": "monthly"}, False, "", False),
    ("demo", "/tmp/evil-runbook.yaml", {"env": "demo", "runbook": "monthly"}, False, "", False),
    ("demo.yaml", "monthly", {"env": "demo", "runbook": "monthly"}, False, "", False),
    ("demo", "monthly", {"env": "demo", "runbook": "monthly"}, True, "", False),
    ("demo", "monthly", {"env": "demo", "runbook": "monthly"}, True, "  ", False),
    ("/srv/pitstop/prod.yaml", "monthly", {"env": "/srv/pitstop/prod.yaml", "runbook": "monthly"}, False, "", True),
    ("demo", "quarterly", {"env": "demo", "runbook": "monthly"}, True, "restore tested by hand", True),
]


def test_flow_parameters_get_the_cli_guards() -> None:
    trusted = 0
    for env, runbook, deployed, accept, reason, ok in CASES:
        try:
            flow_parameters(env=env, runbook=runbook, run_id=None, reason=reason, accept_unverified_backup=accept,
                            deployment_parameters=deployed)
            accepted = True
        except InputError:
            accepted = False
        assert accepted == ok, (env, runbook, accept, reason)
        trusted += accepted and not ok
    record("flow_parameters", forged_inputs=sum(not c[-1] for c in CASES), trusted=trusted)


@pytest.mark.parametrize("run_id", ["../x", "/abs"])
def test_resume_and_report_show_refuse_paths_as_run_ids(make_env: Any, run_id: str) -> None:
    from tests.conftest import run_cli

    env = make_env()
    for args in (["resume", run_id, "--env", str(env)], ["report", "show", run_id, "--env", str(env)]):
        res = run_cli(*args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert "Traceback" not in res.stderr
