"""Several environments on one Prefect server (PostgreSQL-backed) with two process workers: every
environment's monthly flow run succeeds, a second trigger of a running environment ends ``Cancelled``
named ``Refused`` (the environment lock), and no two runs of one environment overlap in the audit logs.

The same set-up as ``make bench-pool`` (bench/pool_setup.py), smaller: 3 environments, 1 duplicate."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench import pool_setup as ps
from tests.operator.helpers import WAIT_FOR_RELEASE


@pytest.fixture
def pool_site(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path, ps.PgCluster]]:
    procs, pg = ps.Processes(), ps.PgCluster()
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_API_AUTH_STRING")}
    try:
        pg.start()  # the server behind basic auth, as docs/prefect.md asks: every client below passes it
        api = ps.start_server(procs, pg, tmp_path / "prefect-home", auth=f"pitstop:{os.urandom(8).hex()}")
        ps.with_api(api)
        yield api, tmp_path, pg
    finally:
        procs.stop()
        pg.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_duplicate_refused_by_lock_no_overlap(pool_site: tuple[dict[str, str], Path, ps.PgCluster]) -> None:
    api, tmp, pg = pool_site
    envs = tmp / "envs"
    envs.mkdir()
    procs = ps.Processes()
    names = ["pa", "pb", "pc"]
    try:
        configs = [ps.write_environment(envs, n, pg) for n in names]
        # without the credential: one line saying what to set, no traceback, the credential never shown
        anon = {k: v for k, v in {**os.environ, **api}.items() if k != "PREFECT_API_AUTH_STRING"}
        refused = subprocess.run([sys.executable, "-m", "pitstop.cli", "deploy", "--env", str(configs[0]),
                                  "--work-pool", "pool-t"], cwd=ps.ROOT, env=anon, capture_output=True, text=True)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert "the Prefect API refused the request (401" in refused.stderr
        assert "PREFECT_API_AUTH_STRING" in refused.stderr
        with ThreadPoolExecutor(3) as ex:
            list(ex.map(lambda c: ps.pitstop_deploy(c, "pool-t", api), configs))
        asyncio.run(ps.pause_deployments([f"pitstop-notices/{n}-notices" for n in names]))
        for w in (1, 2):
            ps.start_worker(procs, api, "pool-t", f"w{w}", tmp / f"worker-{w}.log", limit=4, query_s=1)
        # an online-safe staging step that waits for a `release` file on the app host: pb and pc have theirs,
        # pa holds its environment until the two other triggers of pa have ended (no race with their start-up)
        params = {"runbook": str(ps.staging_runbook(envs, 0, argv=WAIT_FOR_RELEASE))}
        for n in ("pb", "pc"):
            (envs / n / "hosts" / "app-1" / "release").touch()
        t0 = datetime.now(UTC) + timedelta(seconds=3)
        firsts = asyncio.run(ps.trigger([f"pitstop-maintenance/{n}-monthly" for n in names], at=t0,
                                        parameters=params))
        holder = ps.wait_started(envs / "pa", timeout_s=120)  # pa's first run holds the environment lock
        # two more triggers of pa while it runs: the monthly deployment again (the UI's "Run"), and an
        # emergency through `pitstop emergency`, which waits for its flow run
        emergency = subprocess.Popen([sys.executable, "-m", "pitstop.cli", "emergency", "--env", str(configs[0]),
                                      "--runbook", "emergency-disk", "--reason", "disk at 97%", "--json"],
                                     cwd=ps.ROOT, env={**os.environ, **api}, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        dup = asyncio.run(ps.trigger(["pitstop-maintenance/pa-monthly"], parameters=params))[0]
        ps.wait_final([dup], timeout_s=240)
        em_out, em_err = emergency.communicate(timeout=240)
        (envs / "pa" / "hosts" / "app-1" / "release").touch()
        runs = ps.wait_final([*firsts, dup], timeout_s=240)
    finally:
        procs.stop()

    # the duplicate: a distinct, final, non-failure state naming the run that holds the environment
    state = runs[dup].state
    assert (state.type.value, state.name) == ("CANCELLED", "Refused"), (state.type, state.name, state.message)
    assert f"run {holder.run_id} holds it" in (state.message or "")
    # `pitstop emergency` through the deployment: its flow run refused the same way, the CLI exits 3 saying so
    assert emergency.returncode == 3, em_out + em_err
    assert "environment 'pa' is busy" in em_err and holder.run_id in em_err and "Traceback" not in em_err
    # every first trigger ran to completion and its pitstop run succeeded
    assert all(runs[i].state.is_completed() for i in firsts), [(runs[i].state.name, runs[i].state.message)
                                                               for i in firsts]
    audit = [r for n in names for r in ps.audit_runs(envs / n)]
    assert sorted(r.environment for r in audit) == names  # the refused trigger left no run folder behind
    assert all(r.status == "succeeded" for r in audit), [(r.run_id, r.status) for r in audit]
    assert ps.lock_violations(audit) == []
    # nothing of the refused flow run reached pa's notification channel (only the first run's messages)
    sent = [json.loads(x) for x in (envs / "pa" / "notifications.jsonl").read_text().splitlines()]
    assert {m.get("run_id") for m in sent if m.get("run_id")} <= {holder.run_id}
