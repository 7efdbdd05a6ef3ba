"""``pitstop deploy``: create/update an environment's Prefect deployments; emergency via a deployment."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .console import safe_console
from .errors import InputError, RunLocked

out = safe_console()


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)


def deploy(env: Annotated[str, typer.Option("--env", "-e", help="environment name or config path")],
           work_pool: Annotated[str, typer.Option(help="Prefect process work pool (created if missing)")] = "pitstop",
           dry_run: Annotated[bool, typer.Option(help="print the deployments, change nothing")] = False,
           write_prefect_yaml: Annotated[Path | None, typer.Option(help="also write them as a prefect.yaml")] = None,
           as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Create or update the environment's deployments (schedules, notices, emergency) on PREFECT_API_URL."""
    import os

    from .config import load_config
    from .deploy import deployment_specs
    from .runbook import load_runbook

    cfg = load_config(env)
    specs = deployment_specs(cfg)
    for spec in specs:  # every scheduled runbook must exist and validate against the config
        if spec.flow == "pitstop-maintenance" and spec.parameters["trigger"] == "scheduled":
            load_runbook(spec.parameters["runbook"], cfg)
    if write_prefect_yaml is not None:
        from .deploy import prefect_yaml

        write_prefect_yaml.write_text(prefect_yaml(specs, work_pool))
    if dry_run:
        rows: list[dict[str, Any]] = [s.model_dump() for s in specs]
    else:
        if not os.environ.get("PREFECT_API_URL"):
            raise InputError("set PREFECT_API_URL to the Prefect server to deploy to (see docs/prefect.md)")
        from .prefect_adapter.deployments import apply

        rows = apply(specs, work_pool)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
        return
    for r in rows:
        name = r.get("deployment") or f"{r['flow']}/{r['name']}"
        sched = str(r.get("schedule") or r.get("rrule") or r.get("cron") or "no schedule").replace("\n", " ")
        out.print(f"[green]✓[/green] {name}  [dim]{sched} ({r.get('timezone') or '-'})[/dim]")


def emergency_via_deployment(name: str, cfg: Any, runbook: str, reason: str, accept_unverified_backup: bool,
                             override_blackout: bool, expected_downtime: str | None, wait: bool) -> Path | None:
    """Trigger the environment's emergency deployment; return the run folder when waiting."""
    from .deploy import REFUSED, REFUSED_PREFIX, env_ref
    from .prefect_adapter.deployments import trigger_deployment
    from .runner import run_id_for_flow_run

    rb_ref = str(Path(runbook).resolve()) if Path(runbook).suffix in (".yaml", ".yml") else runbook
    params = {"env": env_ref(cfg), "runbook": rb_ref, "trigger": "emergency", "reason": reason,
              "accept_unverified_backup": accept_unverified_backup, "override_blackout": override_blackout,
              "expected_downtime": expected_downtime}
    info = trigger_deployment(name, params, wait=wait)
    if info["state"] == "CANCELLED" and info.get("state_name") == REFUSED:  # the environment lock: exit 3
        raise RunLocked(str(info.get("state_message") or "environment busy").removeprefix(REFUSED_PREFIX))
    from datetime import datetime

    start = datetime.fromisoformat(info["scheduled_start_time"])
    run_id = run_id_for_flow_run(str(params["env"]), rb_ref, info["flow_run_id"], start)
    run_dir = cfg.resolve(cfg.reports.dir) / run_id
    info.update(run_id=run_id, run_dir=str(run_dir), deployment=name)
    if not wait:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return None
    deadline = time.monotonic() + 30  # the report is written just before the flow run finishes
    while not (run_dir / "report.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return run_dir
