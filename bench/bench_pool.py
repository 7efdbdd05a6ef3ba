"""Many environments, one Prefect server, several workers (``make bench-pool``).

Set-up, all on this machine and all removed at the end (also on Ctrl-C):
  * one Debian PostgreSQL 15 cluster (Unix socket): Prefect's database and one database per environment,
    each seeded with the demo shop;
  * one ``prefect server`` on it, one ``process`` work pool, ``BENCH_WORKERS`` (2) ``prefect worker``s;
  * ``BENCH_ENVS`` (12) environments (the demo config: local storage, three local-transport hosts each),
    deployed with ``pitstop deploy --env CONFIG --work-pool POOL`` (pitstop's own path).

Measured: every environment's ``<env>-monthly`` deployment gets a flow run scheduled for the same instant T0
(as when their schedules fire in the same minute); while the first ``BENCH_DUPLICATES`` (4) of them run
(their audit log says ``run.started``: the run holds the environment lock), each gets a second flow run of
the same deployment (someone pressing "Run" in the UI). Every flow run is awaited.

  runs               flow runs created (environments + duplicates)
  succeeded          flow runs Completed whose pitstop run succeeded
  refused_by_lock    flow runs that ended Cancelled named "Refused" (the environment lock was held)
  lock_violations    pairs of runs of one environment whose audit-log intervals (run.started ..
                     run.finished) overlap
  makespan_vs_serial makespan / the sum of the runs' own durations; makespan = T0 .. the last flow run's
                     end (Prefect's timestamps); a run's own duration = its audit log's run.started ..
                     run.finished (pitstop's work; the flow-run start-up before it counts in the makespan only)

Knobs: BENCH_ENVS, BENCH_WORKERS, BENCH_DUPLICATES, BENCH_LIMIT (worker --limit, default 8),
BENCH_QUERY_S (the workers' PREFECT_WORKER_QUERY_SECONDS, default 2; Prefect's own: 10),
BENCH_STAGING_S (the staging step, default 30; 0: the plain monthly runbook), BENCH_KEEP=1 keeps .pitstop/bench-pool.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import pool_setup as ps  # noqa: E402

ENVS = int(os.environ.get("BENCH_ENVS", 12))
WORKERS = int(os.environ.get("BENCH_WORKERS", 2))
DUPLICATES = int(os.environ.get("BENCH_DUPLICATES", 4))
LIMIT = int(os.environ["BENCH_LIMIT"]) if os.environ.get("BENCH_LIMIT") else 8
QUERY_S = float(os.environ.get("BENCH_QUERY_S", 2))
STAGING_S = float(os.environ.get("BENCH_STAGING_S", 30))
STATE = ROOT / ".pitstop" / "bench-pool"
POOL = "pitstop-bench"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def measure(procs: ps.Processes, pg: ps.PgCluster) -> dict[str, Any]:
    t = time.monotonic()
    pg.start()
    api = ps.start_server(procs, pg, STATE / "prefect-home")
    ps.with_api(api)
    log(f"prefect server on PostgreSQL 15 up ({time.monotonic() - t:.1f} s): {api['PREFECT_API_URL']}")
    names = [f"pool{i:02d}" for i in range(1, ENVS + 1)]
    (STATE / "envs").mkdir(parents=True)
    configs = [ps.write_environment(STATE / "envs", n, pg) for n in [*names, "solo"]]
    t = time.monotonic()
    with ThreadPoolExecutor(3) as ex:  # `pitstop deploy` per environment (4 deployments each)
        list(ex.map(lambda c: ps.pitstop_deploy(c, POOL, api), configs))
    asyncio.run(ps.pause_deployments([f"pitstop-notices/{n}-notices" for n in [*names, "solo"]]))
    log(f"{ENVS} environments deployed to work pool {POOL!r} ({time.monotonic() - t:.1f} s)")
    for w in range(WORKERS):
        ps.start_worker(procs, api, POOL, f"worker-{w + 1}", STATE / f"worker-{w + 1}.log", limit=LIMIT,
                        query_s=QUERY_S)

    params = {"runbook": str(ps.staging_runbook(STATE / "envs", STAGING_S))} if STAGING_S else None
    # the same run alone on the same workers first: what one run costs without company (and a warm-up)
    solo_id = asyncio.run(ps.trigger(["pitstop-maintenance/solo-monthly"], parameters=params))
    solo = ps.wait_final(solo_id, timeout_s=600)[solo_id[0]]
    solo_audit = ps.audit_runs(STATE / "envs" / "solo")[0]
    solo_own = (solo_audit.finished or solo_audit.started) - solo_audit.started
    solo_flow = (solo.end_time - solo.start_time).total_seconds()
    log(f"one run alone: {solo_own:.1f} s in its audit log, flow run {solo_flow:.1f}"
        f" s, started {(solo.start_time - solo.expected_start_time).total_seconds():.1f} s after it was due")

    t0 = (datetime.now(UTC) + timedelta(seconds=20)).replace(microsecond=0)
    firsts = asyncio.run(ps.trigger([f"pitstop-maintenance/{n}-monthly" for n in names], at=t0, parameters=params))
    log(f"{ENVS} monthly flow runs scheduled for {t0:%H:%M:%S} UTC; {WORKERS} workers "
        f"(--limit {LIMIT or 'none'}, polling every {QUERY_S:g} s); "
        f"runbook: monthly" + (f" + {STAGING_S:g} s of staging" if STAGING_S else ""))
    dups: list[str] = []
    for n in names[:DUPLICATES]:
        ps.wait_started(STATE / "envs" / n, timeout_s=300)
        dups += asyncio.run(ps.trigger([f"pitstop-maintenance/{n}-monthly"], parameters=params))
    log(f"{len(dups)} duplicate triggers sent while their environment's first run held the lock")
    runs = ps.wait_final(firsts + dups, timeout_s=1200)

    audit = [r for n in names for r in ps.audit_runs(STATE / "envs" / n)]
    violations = ps.lock_violations(audit)
    first_ok = sum(1 for i in firsts if runs[i].state.is_completed())
    if not_ok := [f"{a.run_id}: {a.status}" for a in audit if a.status != "succeeded"]:
        log(f"runs that did not succeed: {not_ok}")
    refused = sum(1 for i in dups if runs[i].state.type.value == "CANCELLED" and runs[i].state.name == "Refused")
    succeeded = sum(1 for a in audit if a.status == "succeeded")  # a failed pitstop run is a Completed flow run
    ends = [r.end_time for r in runs.values() if r.end_time]
    makespan = (max(ends) - t0).total_seconds()
    own = sum(a.finished - a.started for a in audit if a.finished)
    flow_own = sum((r.end_time - r.start_time).total_seconds() for r in runs.values()
                   if r.start_time and r.end_time and r.state.is_completed())
    starts = sorted((runs[i].start_time - t0).total_seconds() for i in firsts if runs[i].start_time)
    for i, n in zip(dups, names, strict=False):
        r = runs[i]
        log(f"duplicate of {n} ({r.name}): {r.state.type.value} {r.state.name!r} started "
            f"{(r.start_time - r.expected_start_time).total_seconds():.1f} s after it was sent: {r.state.message}")
    log(f"first triggers: {first_ok}/{ENVS} completed; flow runs started T0{starts[0]:+.1f} s .. T0{starts[-1]:+.1f} s")
    log(f"makespan {makespan:.1f} s; sum of audit-log run durations {own:.1f} s "
        f"(mean {own / max(len(audit), 1):.1f} s); sum of Prefect flow-run durations {flow_own:.1f} s "
        f"(makespan / that = {makespan / flow_own:.2f}); {len(audit)} runs x the run alone "
        f"{solo_own:.1f} s = {len(audit) * solo_own:.1f} s "
        f"(makespan / that = {makespan / (len(audit) * solo_own):.2f})")
    if violations:
        log(f"overlapping runs: {violations}")
    return {"environments": ENVS, "workers": WORKERS, "runs": len(runs), "succeeded": succeeded,
            "refused_by_lock": refused, "lock_violations": len(violations),
            "makespan_vs_serial": f"{makespan / own:.2f}" if own else "nan"}


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    if STATE.exists():
        shutil.rmtree(STATE)
    STATE.mkdir(parents=True)
    procs = ps.Processes()
    pg = ps.PgCluster()
    try:
        result = measure(procs, pg)
    except KeyboardInterrupt:
        log("interrupted: stopping the workers, the server and PostgreSQL")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        procs.stop()
        pg.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(STATE, ignore_errors=True)
    print(" ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
