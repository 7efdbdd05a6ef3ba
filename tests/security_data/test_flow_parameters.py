"""Prefect flow parameters get the CLI's guards (issue #20 point 9).

Whoever can reach the Prefect API chooses a flow run's parameters. ``run_id='../../../../outside'`` once
wrote a run folder outside the reports directory, ``env``/``runbook`` accepted any YAML path, and an
override needed no reason; the guard compared the parameters with ``prefect.runtime.deployment.parameters``,
which are the *flow run's* own parameters, so a hostile flow run of a real deployment always matched.
Here the guard is driven directly with every hostile shape, then through a real Prefect API: `pitstop
deploy` creates the deployments, flow runs with hostile parameters are created from them and executed by
Prefect's own engine (``python -m prefect.engine``, as a worker does). Each one fails before anything is
read or written; the deployment's own parameters still run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitstop.errors import InputError
from pitstop.input_guards import flow_parameters
from tests.conftest import ROOT, run_cli
from tests.reliability.results import record

RB = ROOT / "runbooks"


def _guard(**kw: Any) -> Any:
    base: dict[str, Any] = {"env": "demo", "runbook": "monthly", "run_id": None, "reason": "",
                            "accept_unverified_backup": False, "deployment_parameters": {"env": "demo",
                                                                                         "runbook": "monthly"}}
    return flow_parameters(**{**base, **kw})


def test_the_guard_refuses_every_hostile_shape(tmp_path: Path) -> None:
    cfg = tmp_path / "deployed" / "prod.yaml"
    cfg.parent.mkdir()
    cfg.parent.chmod(0o700)
    cfg.write_text((ROOT / "config" / "demo.yaml").read_text())
    beside = cfg.parent / "hotfix.yaml"
    beside.write_text((RB / "monthly.yaml").read_text())
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "evil.yaml").write_text((RB / "monthly.yaml").read_text())
    link = cfg.parent / "linked.yaml"
    link.symlink_to(shared / "evil.yaml")
    deployed = {"env": str(cfg), "runbook": "monthly"}
    hostile: list[dict[str, Any]] = [
        *({"run_id": rid} for rid in ("../../../../outside", "/tmp/abs", "a/../../b", "..", "x\n", "", "a b")),
        {"env": "/tmp/evil.yaml"}, {"env": "demo.yaml"}, {"env": "../config/demo"}, {"env": "no-such-env"},
        {"env": str(ROOT / "config" / "demo.yaml")},  # a real config, but not the deployment's
        {"runbook": "/etc/passwd"}, {"runbook": str(shared / "evil.yaml")}, {"runbook": str(link)},
        {"runbook": "../runbooks/monthly"}, {"runbook": "no-such-runbook"},
        {"accept_unverified_backup": True}, {"accept_unverified_backup": True, "reason": " \n "},
        {"override_blackout": True}, {"trigger": "emergency"}, {"trigger": "root"},
        {"expected_downtime": "soon"}, {"wait_s": -1.0}, {"wait_s": math.nan}, {"wait_s": 1e9},
    ]
    trusted = []
    for case in hostile:
        params = {"deployment_parameters": deployed, "env": str(cfg), **case}
        try:
            _guard(**params)
            trusted.append(case)
        except InputError as exc:
            assert "Traceback" not in str(exc) and str(exc)
    accepted = [
        {"env": str(cfg), "deployment_parameters": deployed},  # the deployment's own path
        {"env": str(cfg), "runbook": str(beside), "deployment_parameters": deployed},  # beside its config
        {"env": str(cfg), "runbook": str(RB / "quarterly.yaml"), "deployment_parameters": deployed},
        {"trigger": "emergency", "reason": "disk full"}, {"accept_unverified_backup": True, "reason": "tested"},
        {"env": "/anywhere/x.yaml", "deployment_parameters": None},  # in-process: the CLI's own argument
        {"run_id": "20261204T020000Z-prod-monthly-abc123", "expected_downtime": "20m", "wait_s": 30.0},
    ]
    files = [_guard(**case) for case in accepted]
    assert files[0].env == str(cfg.resolve()) and files[0].runbook == str((RB / "monthly.yaml").resolve())
    assert files[1].runbook == str(beside.resolve())
    record("flow_parameter_shapes", forged_inputs=len(hostile), trusted=len(trusted))
    assert trusted == []


def test_refused_parameters_create_no_run_folder(make_env: Any, tmp_path: Path) -> None:
    """Called as Prefect calls it (``fn``): nothing under the state directory, nothing outside."""
    from pitstop.prefect_adapter import maintenance

    env = make_env()
    before = {p for p in tmp_path.rglob("*")}
    cases = [{"run_id": "../../../../outside"}, {"accept_unverified_backup": True},
             {"trigger": "emergency"}, {"expected_downtime": "forever"}]
    refused = 0
    for case in cases:
        with pytest.raises(InputError):
            maintenance.fn(**{"env": str(env), "runbook": "monthly", **case})
        refused += 1
    created = {p for p in tmp_path.rglob("*")} - before
    record("flow_fn_no_folder", forged_inputs=len(cases), trusted=len(cases) - refused + len(created))
    assert created == set()


# -- through a real Prefect API ------------------------------------------------------------------------
def _execute(flow_run_id: str) -> subprocess.CompletedProcess[str]:
    """Run a flow run the way a process worker does: Prefect's engine in a fresh process, here with Prefect
    quieted to WARNING as the ``pitstop`` command quiets itself (pitstop's own lines must reach the API anyway)."""
    env = {**os.environ, "PREFECT__FLOW_RUN_ID": flow_run_id, "PREFECT_LOGGING_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "prefect.engine"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def _state(flow_run_id: str) -> tuple[str, str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        fr = client.read_flow_run(uuid.UUID(flow_run_id))
    assert fr.state is not None
    return fr.state.type.value, fr.state.message or ""


def test_hostile_flow_runs_of_real_deployments_fail_before_anything(make_env: Any, tmp_path: Path,
                                                                    prefect_api: str) -> None:
    from prefect.client.orchestration import get_client

    env = make_env()
    state = Path(yaml.safe_load(env.read_text())["state_dir"])
    evil_state = tmp_path / "evil-state"
    evil = tmp_path / "elsewhere" / "evil.yaml"
    evil.parent.mkdir()
    doc = yaml.safe_load(env.read_text())
    doc["state_dir"] = str(evil_state)
    evil.write_text(yaml.safe_dump(doc))
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "rb.yaml").write_text((RB / "monthly.yaml").read_text())

    pool = f"pool-{uuid.uuid4().hex[:6]}"
    deployed = run_cli("deploy", "--env", str(env), "--work-pool", pool, "--json", env={"PREFECT_API_URL": prefect_api})
    assert deployed.returncode == 0, deployed.stderr
    ids = {d["deployment"]: d["id"] for d in json.loads(deployed.stdout)}
    monthly, notices = ids["pitstop-maintenance/test-monthly"], ids["pitstop-notices/test-notices"]

    escape = f"outside-{uuid.uuid4().hex[:8]}"  # a name no other test can have created
    hostile = [
        (monthly, {"run_id": f"../../../../{escape}"}),
        (monthly, {"env": str(evil)}),
        (monthly, {"runbook": str(shared / "rb.yaml")}),
        (monthly, {"accept_unverified_backup": True}),
        (monthly, {"trigger": "emergency"}),
        (notices, {"env": str(evil)}),
    ]
    with get_client(sync_client=True) as client:
        runs = [(str(client.create_flow_run_from_deployment(uuid.UUID(dep), parameters=params).id), params)
                for dep, params in hostile]
        control = str(client.create_flow_run_from_deployment(uuid.UUID(notices)).id)
    trusted = 0
    for fid, params in runs:
        _execute(fid)
        kind, message = _state(fid)
        ok = kind == "FAILED" and "InputError" in message
        trusted += not ok
        assert ok, (params, kind, message)
        assert "Traceback" not in message
    _execute(control)
    assert _state(control)[0] == "COMPLETED", _state(control)  # the deployment's own parameters still run
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs: list[str] = []
    deadline = time.monotonic() + 60  # flow-run logs reach the API in batches, late on a loaded machine
    while f"config: {env.resolve()}" not in logs and time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            logs = [lg.message for lg in client.read_logs(log_filter=LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(control)])))]
        time.sleep(0.5)
    assert f"config: {env.resolve()}" in logs, logs  # the flow run names the file it loaded
    outside = [p for p in tmp_path.parent.rglob(escape)] + [p for p in Path("/").glob(escape)]
    nothing = not (state / "runs").exists() or not any((state / "runs").iterdir())
    record("flow_parameters_prefect_api", forged_inputs=len(hostile),
           trusted=trusted + len(outside) + (not nothing) + evil_state.exists())
    assert outside == [] and nothing and not evil_state.exists()
