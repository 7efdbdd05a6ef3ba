"""Scripted experiment behind docs/prefect.md "A worker dies mid-run": a Prefect server on PostgreSQL, one
process worker, one environment; the monthly runbook with a 40 s in-window step; the worker's process tree
SIGKILLed 2 s into that step. Prints what the operator sees (Prefect state, maintenance flags, lock, report
list), then (A) retries the flow run through Prefect and (B) after a second kill, runs a new manual run
first and resumes with `pitstop resume` (the hazard the docs warn about). Not part of the test suite:
`.venv/bin/python bench/pool_worker_death.py` (~3 min), everything under /tmp/pitstop-worker-death.
"""
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import pool_setup as ps  # noqa: E402

OUT = Path("/tmp/pitstop-worker-death")
shutil.rmtree(OUT, ignore_errors=True)
OUT.mkdir(parents=True)
def log(*a): print(f"[{datetime.now(UTC):%H:%M:%S}]", *a, flush=True)
def cli(*args, env=None):
    r = subprocess.run([sys.executable, "-m", "pitstop.cli", *args], capture_output=True, text=True, cwd=ps.ROOT,
                       env={**os.environ, "COLUMNS": "160", **(env or {})})
    log(f"$ pitstop {' '.join(args)}  -> exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r
procs, pg = ps.Processes(), ps.PgCluster()
try:
    pg.start()
    api = ps.start_server(procs, pg, OUT / "home")
    ps.with_api(api)
    envs = OUT / "envs"
    envs.mkdir()
    cfg = ps.write_environment(envs, "shop", pg)
    ps.pitstop_deploy(cfg, "pitstop", api)
    asyncio.run(ps.pause_deployments(["pitstop-notices/shop-notices"]))
    rb = yaml.safe_load((ps.ROOT / "runbooks" / "monthly.yaml").read_text())
    st = next(s for s in rb["stages"] if s["name"] == "server-tuning")
    st["steps"].append({"uses": "host.command", "name": "restart app (long)", "targets": "app", "destructive": False,
                        "window": "inside", "with": {"argv": ["sleep", "40"]}})
    (envs / "runbooks").mkdir()
    rbp = envs / "runbooks" / "monthly.yaml"
    rbp.write_text(yaml.safe_dump(rb, sort_keys=False))
    w = ps.start_worker(procs, api, "pitstop", "w1", OUT / "w1.log", query_s=1)
    def started(line: str) -> bool:
        ev = json.loads(line)
        return bool(ev["kind"] == "step.started" and ev["data"].get("step") == "restart app (long)")

    def start_and_wait():
        before = set((envs / "shop" / "runs").glob("*")) if (envs / "shop" / "runs").exists() else set()
        fr = asyncio.run(ps.trigger(["pitstop-maintenance/shop-monthly"], parameters={"runbook": str(rbp)}))[0]
        log("flow run", fr)
        runs = envs / "shop" / "runs"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            auds = [p / "audit.jsonl" for p in runs.glob("*") if p not in before] if runs.exists() else []
            if auds and auds[0].exists() and any(started(line) for line in auds[0].read_text().splitlines()):
                break
            time.sleep(0.3)
        time.sleep(2)
        return fr, auds[0].parent.name
    fr, run_id = start_and_wait()
    log("killing worker tree mid-window; run", run_id)
    ps.Processes.kill_tree(w)
    time.sleep(5)
    r = asyncio.run(ps.flow_runs([fr]))[fr]
    log("prefect state after kill:", r.state.type.value, r.state.name)
    flags = sorted(str(p.relative_to(envs)) for p in (envs / "shop" / "hosts").glob("*/var/www/maintenance.flag"))
    log("maintenance flags present:", flags)
    from pitstop.config import load_config
    from pitstop.connectors.postgres import Database
    from pitstop.locks import current_holder
    log("lock holder now:", current_holder(Database(load_config(str(cfg))), "shop"))
    cli("report", "list", "--env", str(cfg))
    # a second scheduled trigger now: does it run?
    w2 = ps.start_worker(procs, api, "pitstop", "w2", OUT / "w2.log", query_s=1)
    time.sleep(8)
    r = asyncio.run(ps.flow_runs([fr]))[fr]
    log("prefect state with a fresh worker up (8 s):", r.state.type.value, r.state.name)
    # Prefect retry path: mark crashed then reschedule (what the UI's Retry does after an automation marks it Crashed)
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Scheduled
    async def retry():
        async with get_client() as c:
            await c.set_flow_run_state(fr, Crashed(message="worker lost"), force=True)
            await c.set_flow_run_state(fr, Scheduled(name="AwaitingRetry"), force=True)
    asyncio.run(retry())
    log("flow run marked Crashed, then Scheduled/AwaitingRetry (UI Retry)")
    runs = ps.wait_final([fr], timeout_s=240)
    r = runs[fr]
    log("after retry:", r.state.type.value, r.state.name, r.state.message)
    log("run folders:", sorted(p.name for p in (envs / "shop" / "runs").iterdir()))
    ev = [json.loads(x)["kind"] for x in (envs / "shop" / "runs" / run_id / "audit.jsonl").read_text().splitlines()]
    log("kinds: run.resumed", ev.count("run.resumed"), "backup.created", ev.count("backup.created"),
        "step.already_done", ev.count("step.already_done"), "last", ev[-3:])
    cli("report", "list", "--env", str(cfg))
    cli("resume", run_id, "--env", str(cfg), "--engine", "local")
    log("=== variant B: kill again, resume with the CLI")
    w2 = procs.procs[-1]
    fr, run_id = start_and_wait()
    ps.Processes.kill_tree(w2)
    time.sleep(3)
    flags = sorted(str(p.relative_to(envs)) for p in (envs / "shop" / "hosts").glob("*/var/www/maintenance.flag"))
    log("maintenance flags present:", flags)
    cli("report", "list", "--env", str(cfg))
    cli("run", "--env", str(cfg), "--runbook", "monthly", "--engine", "local")
    cli("resume", run_id, "--env", str(cfg), "--engine", "local")
    flags = sorted(str(p.relative_to(envs)) for p in (envs / "shop" / "hosts").glob("*/var/www/maintenance.flag"))
    log("maintenance flags present:", flags)
    r = asyncio.run(ps.flow_runs([fr]))[fr]
    log("prefect state after CLI resume:", r.state.type.value, r.state.name)
    cli("report", "list", "--env", str(cfg))
finally:
    procs.stop()
    pg.stop()
